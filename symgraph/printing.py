"""Text and Graphviz views of graphs: ``debugprint`` and ``to_dot``."""

from __future__ import annotations

import io
from collections.abc import Sequence

from .graph.basic import Constant, SharedVariable, Variable
from .graph.fgraph import toposort


def _outputs_of(obj) -> tuple[list[Variable], list[str]]:
    """The variables to print and a title for each."""
    from .compile import CompiledFunction
    if isinstance(obj, CompiledFunction):
        outs = obj.fgraph.outputs
        names = [f"output {i}" for i in range(obj.n_outputs)] + \
                [f"update of {t.label()}" for t in obj.update_targets]
        return list(outs), names
    outs = [obj] if isinstance(obj, Variable) else list(obj)
    return outs, [f"output {i}" for i in range(len(outs))]


def _op_label(node) -> str:
    """The op's name; elementwise ops whose formula is more than the name add the formula."""
    from .ops.elemwise import Elemwise
    from .scalar import to_text
    op = node.op
    if isinstance(op, Elemwise):
        text = to_text(op.expr)
        plain = f"{op.expr.op}({', '.join(f'in{i}' for i in range(op.nin))})"
        if op.expr.op in ("input", "const", "cast") or text == plain or text.strip("()") == \
                f"in0 {_symbol(op.expr.op)} in1":
            return str(op)
        return f"{op}{{{text}}}"
    return str(op)


def _symbol(name: str) -> str | None:
    from .scalar import PRIMITIVES
    prim = PRIMITIVES.get(name)
    return prim.symbol if prim else None


def _leaf_label(v: Variable) -> str:
    if isinstance(v, SharedVariable):
        return f"shared {v.label()}"
    if isinstance(v, Constant):
        return f"constant {v.label()}"
    return f"input {v.name}" if v.name else "input"


def debugprint(obj, file=None, print_type: bool = True) -> str:
    """Print (and return) an indented tree of the graph of a variable, list or compiled function.

    A compiled function shows its rewritten graph, with one tree per output and update.
    Subtrees seen before are printed once and then referred to by their ``id``.
    """
    outputs, titles = _outputs_of(obj)
    from .compile import CompiledFunction
    if not isinstance(obj, CompiledFunction) and len(outputs) == 1:
        titles = None
    buf = io.StringIO()
    ids: dict[int, str] = {}
    counter = [0]

    def ident(v: Variable) -> str:
        if id(v) not in ids:
            n = counter[0]
            counter[0] += 1
            label = ""
            while True:
                label = chr(ord("A") + n % 26) + label
                n = n // 26 - 1
                if n < 0:
                    break
            ids[id(v)] = label
        return ids[id(v)]

    def rec(v: Variable, depth: int, printed: set):
        pad = " |" * depth + ("" if depth == 0 else " ")
        t = f" {v.type}" if print_type else ""
        if v.owner is None:
            buf.write(f"{pad}{_leaf_label(v)}{t}\n")
            return
        node = v.owner
        out_note = f".{v.index}" if len(node.outputs) > 1 else ""
        name = f" '{v.name}'" if v.name else ""
        if id(v) in printed:
            buf.write(f"{pad}{_op_label(node)}{out_note}{name} id {ident(v)}{t} (see above)\n")
            return
        buf.write(f"{pad}{_op_label(node)}{out_note}{name} id {ident(v)}{t}\n")
        printed.add(id(v))
        for inp in node.inputs:
            rec(inp, depth + 1, printed)

    printed: set = set()
    for i, out in enumerate(outputs):
        if titles:
            buf.write(f"{titles[i]}:\n")
        rec(out, 0, printed)
    n_nodes = len(toposort(outputs))
    buf.write(f"({n_nodes} apply nodes)\n")
    text = buf.getvalue()
    if file is not False:
        print(text, end="", file=file)
    return text


def to_dot(obj) -> str:
    """Graphviz DOT text of the graph: boxes for ops, ellipses for values."""
    outputs, titles = _outputs_of(obj)
    lines = ["digraph symgraph {", "  rankdir=TB;", "  node [fontname=\"monospace\"];"]
    seen: set[int] = set()

    def var_node(v: Variable) -> str:
        key = f"v{id(v)}"
        if id(v) not in seen:
            seen.add(id(v))
            if v.owner is None:
                shape = "box, style=rounded" if isinstance(v, SharedVariable) else "ellipse"
                label = f"{_leaf_label(v)}\\n{v.type}"
            else:
                shape = "ellipse"
                label = f"{v.name + chr(92) + 'n' if v.name else ''}{v.type}"
            lines.append(f'  {key} [shape={shape}, label="{_esc(label)}"];')
        return key

    for node in toposort(outputs):
        nkey = f"n{id(node)}"
        label = _esc(_op_label(node))
        lines.append(f'  {nkey} [shape=box, style=filled, fillcolor="#dde8f5", label="{label}"];')
        for i, inp in enumerate(node.inputs):
            lines.append(f"  {var_node(inp)} -> {nkey} [label=\"{i}\"];")
        for out in node.outputs:
            lines.append(f"  {nkey} -> {var_node(out)};")
    for i, out in enumerate(outputs):
        lines.append(f'  out{i} [shape=plaintext, label="{_esc(titles[i])}"];')
        lines.append(f"  {var_node(out)} -> out{i};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _esc(s: str) -> str:
    return s.replace('"', '\\"')


__all__: Sequence[str] = ["debugprint", "to_dot"]
