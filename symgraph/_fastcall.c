/* symgraph._fastcall: the C call path of llvm-compiled functions.
 *
 * A Caller holds what one CompiledFunction needs to run a call without Python code: the
 * expected dtype/rank of every argument, the shared variables (read through their __dict__),
 * the output dtypes/ranks, the output map and the update targets, plus a small table of
 * specialisations (input shapes -> native entry, arena, arena lock, output shapes).
 *
 * caller(args) checks that every argument is an exact, aligned, native-byte-order,
 * C-contiguous ndarray of the expected dtype whose shape matches a registered
 * specialisation, allocates the outputs, fills the pointer array on the stack, makes the
 * native call with the GIL released (holding the specialisation's arena lock), installs the
 * updates and returns the outputs.  Anything else (a new shape, a list, a wrong dtype, a
 * device-held shared value, a nonzero status from the native code) goes to the Python
 * fallback callable, which converts, raises the proper error, or compiles a new
 * specialisation and registers it here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include "pythread.h"
#include "structmember.h"
#include <stddef.h>
#include <stdint.h>

#define MAX_SPECS 64 /* as many as the llvm backend keeps instances of shape-generic code */
/* When the table is full, a new shape replaces the least recently used entry if that entry
 * has not run for this many calls.  A fresher one means the shapes in use are more than the
 * table holds (an epoch cycling through 100 batch sizes, say): replacing would then evict
 * each entry just before its next use, so the table is kept and the newcomer takes the
 * Python path. */
#define STALE_CALLS 1024
#define STACK_SLOTS 64
#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline)) /* kept out of line, the
                                        call path measured 5 % slower on a small function */
#else
#define ALWAYS_INLINE static inline
#endif

/* ---------------------------------------------------------------------------------------
 * ArenaLock: a lock the Python path uses with `with` and the C path takes with the GIL
 * released, so both serialise on one specialisation's arena.
 */
/* A plain mutex: PyThread locks read the monotonic clock on every acquire, which costs more
 * than the rest of the locking on a small call. */
#ifndef _WIN32
#include <pthread.h>
typedef pthread_mutex_t sg_mutex;
static int mutex_init(sg_mutex *m) { return pthread_mutex_init(m, NULL) == 0; }
static void mutex_free(sg_mutex *m) { pthread_mutex_destroy(m); }
static int mutex_try(sg_mutex *m) { return pthread_mutex_trylock(m) == 0; }
static void mutex_wait(sg_mutex *m) { pthread_mutex_lock(m); }
static void mutex_release(sg_mutex *m) { pthread_mutex_unlock(m); }
#else
typedef PyThread_type_lock sg_mutex;
static int mutex_init(sg_mutex *m) { return (*m = PyThread_allocate_lock()) != NULL; }
static void mutex_free(sg_mutex *m) { PyThread_free_lock(*m); }
static int mutex_try(sg_mutex *m) { return PyThread_acquire_lock(*m, NOWAIT_LOCK); }
static void mutex_wait(sg_mutex *m) { PyThread_acquire_lock(*m, WAIT_LOCK); }
static void mutex_release(sg_mutex *m) { PyThread_release_lock(*m); }
#endif

typedef struct {
    PyObject_HEAD
    sg_mutex mutex;
    int ready;
    unsigned long forks; /* fork_count when the mutex was (re)initialised */
} ArenaLock;

/* Forks this process has made children through (counted in the child).  A lock another
 * thread of the parent held at the fork stays locked in the child, where that thread does not
 * exist: the child re-initialises each lock the first time it takes it (the child starts
 * with one thread, and every taker holds the GIL, so nothing else can be using it). */
static unsigned long fork_count = 0;
#ifndef _WIN32
static void count_fork_in_child(void) { fork_count++; }
#endif

/* The lock's mutex, re-initialised first when it was made before the latest fork (GIL held). */
static sg_mutex *lock_mutex(ArenaLock *l) {
    if (l->forks != fork_count) {
        mutex_init(&l->mutex); /* not destroyed: it may be held by a thread that is gone */
        l->forks = fork_count;
    }
    return &l->mutex;
}

/* Acquire with the GIL held, waiting (if it must) without it. */
static void acquire_released(sg_mutex *m) {
    if (!mutex_try(m)) {
        Py_BEGIN_ALLOW_THREADS
        mutex_wait(m);
        Py_END_ALLOW_THREADS
    }
}

static PyObject *ArenaLock_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    ArenaLock *self = (ArenaLock *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (!mutex_init(&self->mutex)) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->ready = 1;
    self->forks = fork_count;
    return (PyObject *)self;
}

static void ArenaLock_dealloc(ArenaLock *self) {
    if (self->ready) mutex_free(&self->mutex);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ArenaLock_enter(ArenaLock *self, PyObject *unused) {
    acquire_released(lock_mutex(self));
    Py_RETURN_TRUE;
}

static PyObject *ArenaLock_exit(ArenaLock *self, PyObject *const *args, Py_ssize_t nargs) {
    mutex_release(&self->mutex);
    Py_RETURN_FALSE;
}

static PyMethodDef ArenaLock_methods[] = {
    {"__enter__", (PyCFunction)ArenaLock_enter, METH_NOARGS, "Acquire (waiting without the GIL)."},
    {"__exit__", (PyCFunction)(void (*)(void))ArenaLock_exit, METH_FASTCALL, "Release."},
    {NULL}};

static PyTypeObject ArenaLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "symgraph._fastcall.ArenaLock",
    .tp_basicsize = sizeof(ArenaLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A lock for one specialisation's arena, shared by the C and Python call paths.",
    .tp_new = ArenaLock_new,
    .tp_dealloc = (destructor)ArenaLock_dealloc,
    .tp_methods = ArenaLock_methods,
};

/* ---------------------------------------------------------------------------------------
 * Caller
 */
typedef int32_t (*entry_fn)(void **);

typedef struct {
    npy_intp *in_dims;  /* the declared inputs' dims, concatenated */
    npy_intp *out_dims; /* the native outputs' dims, concatenated */
    entry_fn entry;
    void *arena;
    ArenaLock *lock;    /* owned */
    PyObject *keep;     /* owned: keeps the code and the arena alive */
    PyObject **recycled; /* owned: per output, the arrays of the last two calls (newest
                            first); one only this table holds is written again instead of
                            allocating (two, so `y = f(x)` in a loop recycles too) */
    uint64_t used;       /* the caller's tick at this specialisation's latest call */
    int busy;            /* calls using it now (another thread may run while the GIL is
                            released): never replaced while busy */
} Spec;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fallback;          /* fallback(args) -> results, the Python call path */
    int object_args;             /* the native entry takes array objects (else data pointers) */
    int single;                  /* return outputs[0] rather than a list */
    Py_ssize_t n_in, n_shared, n_out, n_user, n_upd;
    int *in_type, *in_ndim;      /* declared inputs */
    Py_ssize_t in_total;         /* sum of in_ndim */
    PyObject **shared_dict;      /* owned: each shared variable's __dict__ */
    int *sh_type, *sh_ndim;
    npy_intp *sh_dims;           /* concatenated */
    int *out_type, *out_ndim;    /* native outputs */
    Py_ssize_t out_total;
    int *output_map;             /* n_user + n_upd entries -> native output index */
    int *copy;                   /* per mapped result: an earlier result already returned it */
    PyObject **target_dict;      /* owned: each update target's __dict__ */
    PyObject **target_lock;      /* owned: each target's _lock when the caller was made, then
                                    its bound `locked` method (2 per target) */
    Spec specs[MAX_SPECS];
    int n_specs;
    int last_hit;                /* the specialisation the previous call matched: tried first */
    uint64_t tick;               /* counts calls (the clock of `Spec.used`) */
    Py_ssize_t replaced;         /* specialisations dropped for newer shapes (for tests) */
    Py_ssize_t fast_calls;       /* calls completed on the C path (for tests) */
    ArenaLock *fn_lock;          /* owned, or NULL: held from reading the shared values to
                                    installing the updates (functions with updates) */
} Caller;

static PyObject *s_host, *s_pull, *s_version, *s_lock, *s_device_state, *s_acquire, *s_release,
    *s_locked, *s_call, *one;

static void spec_clear(Spec *s, Py_ssize_t n_out) {
    if (s->recycled != NULL)
        for (Py_ssize_t j = 0; j < 2 * n_out; j++) Py_CLEAR(s->recycled[j]);
    PyMem_Free(s->recycled);
    s->recycled = NULL;
    PyMem_Free(s->in_dims);
    PyMem_Free(s->out_dims);
    Py_CLEAR(s->lock);
    Py_CLEAR(s->keep);
    s->in_dims = s->out_dims = NULL;
}

static void Caller_dealloc(Caller *self) {
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->fn_lock);
    for (Py_ssize_t i = 0; i < self->n_shared; i++)
        if (self->shared_dict) Py_CLEAR(self->shared_dict[i]);
    for (Py_ssize_t i = 0; i < self->n_upd; i++)
        if (self->target_dict) Py_CLEAR(self->target_dict[i]);
    for (Py_ssize_t i = 0; i < 2 * self->n_upd; i++)
        if (self->target_lock) Py_CLEAR(self->target_lock[i]);
    for (int i = 0; i < self->n_specs; i++) spec_clear(&self->specs[i], self->n_out);
    PyMem_Free(self->in_type);
    PyMem_Free(self->in_ndim);
    PyMem_Free(self->shared_dict);
    PyMem_Free(self->sh_type);
    PyMem_Free(self->sh_ndim);
    PyMem_Free(self->sh_dims);
    PyMem_Free(self->out_type);
    PyMem_Free(self->out_ndim);
    PyMem_Free(self->output_map);
    PyMem_Free(self->copy);
    PyMem_Free(self->target_dict);
    PyMem_Free(self->target_lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Caller_traverse(Caller *self, visitproc visit, void *arg) {
    Py_VISIT(self->fallback);
    for (Py_ssize_t i = 0; i < self->n_shared; i++)
        if (self->shared_dict) Py_VISIT(self->shared_dict[i]);
    for (Py_ssize_t i = 0; i < self->n_upd; i++)
        if (self->target_dict) Py_VISIT(self->target_dict[i]);
    for (int i = 0; i < self->n_specs; i++) Py_VISIT(self->specs[i].keep);
    return 0;
}

static int Caller_tp_clear(Caller *self) {
    Py_CLEAR(self->fallback);
    for (Py_ssize_t i = 0; i < self->n_shared; i++)
        if (self->shared_dict) Py_CLEAR(self->shared_dict[i]);
    for (Py_ssize_t i = 0; i < self->n_upd; i++)
        if (self->target_dict) Py_CLEAR(self->target_dict[i]);
    for (int i = 0; i < self->n_specs; i++) spec_clear(&self->specs[i], self->n_out);
    self->n_specs = 0;
    return 0;
}

/* Read a sequence of ints into a fresh array of n ints. */
static int *int_list(PyObject *seq, Py_ssize_t n, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL) return NULL;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd entries", what, n);
        Py_DECREF(fast);
        return NULL;
    }
    int *out = PyMem_Calloc(n ? n : 1, sizeof(int));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v == -1 && PyErr_Occurred()) {
            PyMem_Free(out);
            Py_DECREF(fast);
            return NULL;
        }
        out[i] = (int)v;
    }
    Py_DECREF(fast);
    return out;
}

/* Concatenate a sequence of shape tuples into a fresh npy_intp array; checks each rank. */
static npy_intp *dims_list(PyObject *shapes, Py_ssize_t n, const int *ndim, Py_ssize_t total) {
    PyObject *fast = PySequence_Fast(shapes, "shapes");
    if (fast == NULL) return NULL;
    npy_intp *out = NULL;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "expected %zd shapes", n);
        goto done;
    }
    out = PyMem_Calloc(total ? total : 1, sizeof(npy_intp));
    if (out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *shape = PySequence_Fast(PySequence_Fast_GET_ITEM(fast, i), "shape");
        if (shape == NULL) goto fail;
        if (PySequence_Fast_GET_SIZE(shape) != ndim[i]) {
            PyErr_Format(PyExc_ValueError, "shape %zd has rank %zd, expected %d", i,
                         PySequence_Fast_GET_SIZE(shape), ndim[i]);
            Py_DECREF(shape);
            goto fail;
        }
        for (int d = 0; d < ndim[i]; d++) {
            out[k++] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(shape, d));
            if (out[k - 1] == -1 && PyErr_Occurred()) {
                Py_DECREF(shape);
                goto fail;
            }
        }
        Py_DECREF(shape);
    }
    goto done;
fail:
    PyMem_Free(out);
    out = NULL;
done:
    Py_DECREF(fast);
    return out;
}

static PyObject **dict_list(PyObject *objs, Py_ssize_t *n) {
    PyObject *fast = PySequence_Fast(objs, "objects");
    if (fast == NULL) return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    PyObject **out = PyMem_Calloc(*n ? *n : 1, sizeof(PyObject *));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        out[i] = PyObject_GenericGetDict(PySequence_Fast_GET_ITEM(fast, i), NULL);
        if (out[i] == NULL) {
            for (Py_ssize_t j = 0; j < i; j++) Py_DECREF(out[j]);
            PyMem_Free(out);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return out;
}

static Py_ssize_t sum(const int *v, Py_ssize_t n) {
    Py_ssize_t s = 0;
    for (Py_ssize_t i = 0; i < n; i++) s += v[i];
    return s;
}

static PyObject *Caller_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames);

/* Caller(fallback, object_args, single, in_types, in_ndims, shared, sh_types, sh_shapes,
 *        out_types, out_ndims, output_map, n_user, targets, fn_lock) */
static PyObject *Caller_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *fallback, *in_types, *in_ndims, *shared, *sh_types, *sh_shapes, *out_types,
        *out_ndims, *output_map, *targets, *fn_lock;
    int object_args, single;
    Py_ssize_t n_user;
    if (!PyArg_ParseTuple(args, "OppOOOOOOOOnOO", &fallback, &object_args, &single, &in_types,
                          &in_ndims, &shared, &sh_types, &sh_shapes, &out_types, &out_ndims,
                          &output_map, &n_user, &targets, &fn_lock))
        return NULL;
    if (fn_lock != Py_None && !PyObject_TypeCheck(fn_lock, &ArenaLockType)) {
        PyErr_SetString(PyExc_TypeError, "fn_lock must be an ArenaLock or None");
        return NULL;
    }
    Caller *self = (Caller *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (fn_lock != Py_None) {
        Py_INCREF(fn_lock);
        self->fn_lock = (ArenaLock *)fn_lock;
    }
    self->vectorcall = Caller_vectorcall;
    Py_INCREF(fallback);
    self->fallback = fallback;
    self->object_args = object_args;
    self->single = single;
    self->n_in = PySequence_Size(in_types);
    self->n_out = PySequence_Size(out_types);
    if (self->n_in < 0 || self->n_out < 0) goto fail;
    if (!(self->in_type = int_list(in_types, self->n_in, "in_types"))) goto fail;
    if (!(self->in_ndim = int_list(in_ndims, self->n_in, "in_ndims"))) goto fail;
    self->in_total = sum(self->in_ndim, self->n_in);
    if (!(self->shared_dict = dict_list(shared, &self->n_shared))) goto fail;
    if (!(self->sh_type = int_list(sh_types, self->n_shared, "sh_types"))) goto fail;
    {
        PyObject *fast = PySequence_Fast(sh_shapes, "sh_shapes");
        if (fast == NULL) goto fail;
        self->sh_ndim = PyMem_Calloc(self->n_shared + 1, sizeof(int));
        if (self->sh_ndim == NULL || PySequence_Fast_GET_SIZE(fast) != self->n_shared) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError, "sh_shapes");
            goto fail;
        }
        for (Py_ssize_t i = 0; i < self->n_shared; i++)
            self->sh_ndim[i] = (int)PySequence_Size(PySequence_Fast_GET_ITEM(fast, i));
        Py_DECREF(fast);
    }
    if (!(self->sh_dims = dims_list(sh_shapes, self->n_shared, self->sh_ndim,
                                    sum(self->sh_ndim, self->n_shared))))
        goto fail;
    if (!(self->out_type = int_list(out_types, self->n_out, "out_types"))) goto fail;
    if (!(self->out_ndim = int_list(out_ndims, self->n_out, "out_ndims"))) goto fail;
    self->out_total = sum(self->out_ndim, self->n_out);
    self->n_user = n_user;
    Py_ssize_t n_map = PySequence_Size(output_map);
    if (n_map < n_user) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "output_map too short");
        goto fail;
    }
    if (n_map + 1 > STACK_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "too many results for the C call path");
        goto fail;
    }
    if (!(self->output_map = int_list(output_map, n_map, "output_map"))) goto fail;
    self->copy = PyMem_Calloc(n_map + 1, sizeof(int));
    if (self->copy == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n_map; i++) {
        if (self->output_map[i] < 0 || self->output_map[i] >= self->n_out) {
            PyErr_SetString(PyExc_ValueError, "output_map out of range");
            goto fail;
        }
        for (Py_ssize_t j = 0; j < i; j++)
            if (self->output_map[j] == self->output_map[i]) self->copy[i] = 1;
    }
    if (!(self->target_dict = dict_list(targets, &self->n_upd))) goto fail;
    if (!(self->target_lock = PyMem_Calloc(2 * self->n_upd + 1, sizeof(PyObject *)))) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t k = 0; k < self->n_upd; k++) {
        PyObject *lock = PyDict_GetItemWithError(self->target_dict[k], s_lock);
        if (lock == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "_lock");
            goto fail;
        }
        Py_INCREF(lock);
        self->target_lock[2 * k] = lock;
        if (!(self->target_lock[2 * k + 1] = PyObject_GetAttr(lock, s_locked))) goto fail;
    }
    if (self->n_user + self->n_upd != n_map) {
        PyErr_SetString(PyExc_ValueError, "output_map must cover the outputs and the updates");
        goto fail;
    }
    if (self->n_in + self->n_shared + self->n_out + 1 > STACK_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "too many arrays for the C call path");
        goto fail;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* The registered specialisation for these input dims, or NULL. */
static Spec *find_spec(Caller *self, const npy_intp *in_dims) {
    for (int k = 0; k < self->n_specs; k++) {
        int ok = 1;
        for (Py_ssize_t i = 0; i < self->in_total && ok; i++) ok = self->specs[k].in_dims[i] == in_dims[i];
        if (ok) return &self->specs[k];
    }
    return NULL;
}

/* The slot a new specialisation takes: a free one, else the least recently used one if no
 * call is using it and it has not run for STALE_CALLS calls (-1: keep the table as it is). */
static int free_slot(Caller *self) {
    if (self->n_specs < MAX_SPECS) return self->n_specs;
    int victim = -1;
    for (int k = 0; k < self->n_specs; k++)
        if (!self->specs[k].busy && (victim < 0 || self->specs[k].used < self->specs[victim].used))
            victim = k;
    if (victim >= 0 && self->tick - self->specs[victim].used < STALE_CALLS) return -1;
    return victim;
}

/* caller.add(in_shapes, out_shapes, entry_address, arena_address, lock, keep) -> bool:
 * register one specialisation (True when those input shapes already have one; False when
 * the table is full of entries in recent use, see free_slot). */
static PyObject *Caller_add(Caller *self, PyObject *args) {
    PyObject *in_shapes, *out_shapes, *lock, *keep;
    unsigned long long entry, arena;
    if (!PyArg_ParseTuple(args, "OOKKO!O", &in_shapes, &out_shapes, &entry, &arena, &ArenaLockType,
                          &lock, &keep))
        return NULL;
    Spec s = {0};
    if (!(s.in_dims = dims_list(in_shapes, self->n_in, self->in_ndim, self->in_total)))
        return NULL;
    if (find_spec(self, s.in_dims) != NULL) {
        PyMem_Free(s.in_dims);
        Py_RETURN_TRUE;
    }
    int slot = free_slot(self);
    if (slot < 0) {
        PyMem_Free(s.in_dims);
        Py_RETURN_FALSE;
    }
    if (!(s.out_dims = dims_list(out_shapes, self->n_out, self->out_ndim, self->out_total))) {
        PyMem_Free(s.in_dims);
        return NULL;
    }
    if (!(s.recycled = PyMem_Calloc(self->n_out > 0 ? 2 * self->n_out : 1, sizeof(PyObject *)))) {
        PyMem_Free(s.in_dims);
        PyMem_Free(s.out_dims);
        return PyErr_NoMemory();
    }
    s.entry = (entry_fn)(uintptr_t)entry;
    s.arena = (void *)(uintptr_t)arena;
    Py_INCREF(lock);
    s.lock = (ArenaLock *)lock;
    Py_INCREF(keep);
    s.keep = keep;
    s.used = self->tick;
    if (slot < self->n_specs) { /* replace: free the old one last (dropping `keep` may run Python code) */
        Spec old = self->specs[slot];
        self->specs[slot] = s;
        self->replaced++;
        spec_clear(&old, self->n_out);
    } else {
        self->specs[self->n_specs++] = s;
    }
    Py_RETURN_TRUE;
}

static PyObject *Caller_get_fast_calls(Caller *self, void *closure) {
    return PyLong_FromSsize_t(self->fast_calls);
}

static PyObject *Caller_get_replaced(Caller *self, void *closure) {
    return PyLong_FromSsize_t(self->replaced);
}

static PyObject *Caller_get_n_specs(Caller *self, void *closure) {
    return PyLong_FromLong(self->n_specs);
}

static inline int array_ok(PyObject *a, int type, int ndim) {
    if (Py_TYPE(a) != &PyArray_Type) return 0;
    PyArrayObject *arr = (PyArrayObject *)a;
    if (PyArray_NDIM(arr) != ndim) return 0;
    PyArray_Descr *d = PyArray_DESCR(arr);
    if (d->type_num != type && !PyArray_EquivTypenums(d->type_num, type)) return 0; /* long/longlong */
    if (PyArray_ISBYTESWAPPED(arr)) return 0;
    return PyArray_CHKFLAGS(arr, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
}

static inline int dims_equal(const npy_intp *a, const npy_intp *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* Wait, without the GIL, until no other thread holds the lock of an update target (a
 * set_value or a device pull in progress), then check that every target can be written.
 * Returns 0 with the GIL held and every lock free (so, with no Python code run before the
 * writes, nobody can take one in between), or -1 with an exception (a signal handler raised
 * while waiting) and nothing changed. */
static int targets_ready(Caller *self) {
    for (;;) {
        PyObject *busy = NULL;
        for (Py_ssize_t k = 0; k < self->n_upd && busy == NULL; k++) {
            PyObject *dict = self->target_dict[k];
            PyObject *lock = PyDict_GetItemWithError(dict, s_lock);
            PyObject *state = PyDict_GetItemWithError(dict, s_device_state);
            PyObject *version = PyDict_GetItemWithError(dict, s_version);
            if (lock == NULL || state == NULL || version == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_AttributeError, "_lock/_version/device_state");
                return -1;
            }
            if (!PyDict_Check(state) || !PyLong_CheckExact(version)) {
                PyErr_SetString(PyExc_TypeError, "device_state must be a dict, _version an int");
                return -1;
            }
            PyObject *held = lock == self->target_lock[2 * k] /* a bound method is cheaper */
                                 ? PyObject_CallNoArgs(self->target_lock[2 * k + 1])
                                 : PyObject_CallMethodNoArgs(lock, s_locked);
            if (held == NULL) return -1;
            Py_DECREF(held);
            if (held != Py_False) busy = lock;
        }
        if (busy == NULL) return 0;
        Py_INCREF(busy);
        PyObject *r = PyObject_CallMethodNoArgs(busy, s_acquire); /* waits without the GIL */
        if (r != NULL) {
            Py_DECREF(r);
            r = PyObject_CallMethodNoArgs(busy, s_release);
            Py_XDECREF(r);
        }
        Py_DECREF(busy);
        if (r == NULL) return -1;
    }
}

/* Install one update as SharedVariable._assign does (value, no pending pull, version + 1,
 * device state cleared), without taking the target's lock: targets_ready() found every lock
 * free and the GIL is held throughout, so no other thread and no signal handler can observe
 * or interleave with the writes.  The replaced objects (and the dropped device handles) are
 * appended to `old` (owned, four slots per target) so that no deallocation, which could run
 * Python code, happens in the middle of an installation. */
static int install(PyObject *dict, PyObject *value, PyObject **old, int *nold) {
    PyObject *state = PyDict_GetItem(dict, s_device_state); /* checked by targets_ready */
    PyObject *version = PyDict_GetItem(dict, s_version);
    PyObject *prev[3] = {PyDict_GetItem(dict, s_host), PyDict_GetItem(dict, s_pull), version};
    PyObject *next = PyNumber_Add(version, one);
    if (next == NULL) return -1;
    if (PyDict_GET_SIZE(state)) {
        PyObject *copy = PyDict_Copy(state);
        if (copy == NULL) {
            Py_DECREF(next);
            return -1;
        }
        old[(*nold)++] = copy;
    }
    for (int i = 0; i < 3; i++)
        if (prev[i] != NULL) {
            Py_INCREF(prev[i]);
            old[(*nold)++] = prev[i];
        }
    int bad = PyDict_SetItem(dict, s_host, value) < 0 ||
              (prev[1] != Py_None && PyDict_SetItem(dict, s_pull, Py_None) < 0) ||
              PyDict_SetItem(dict, s_version, next) < 0;
    Py_DECREF(next);
    if (!bad) PyDict_Clear(state);
    return bad ? -1 : 0;
}

static PyObject *fall_back(Caller *self, PyObject *argtuple) {
    return PyObject_CallOneArg(self->fallback, argtuple);
}

ALWAYS_INLINE PyObject *run_spec(Caller *self, PyObject *argtuple, Spec *spec);

/* One call with the arguments in a tuple. */
static PyObject *Caller_run(Caller *self, PyObject *argtuple) {
    const Py_ssize_t ni = self->n_in;
    self->tick++;
    if (PyTuple_GET_SIZE(argtuple) != ni || self->n_specs == 0) return fall_back(self, argtuple);
    PyObject *const *items = &PyTuple_GET_ITEM(argtuple, 0);
    for (Py_ssize_t i = 0; i < ni; i++)
        if (!array_ok(items[i], self->in_type[i], self->in_ndim[i])) return fall_back(self, argtuple);
    /* the specialisation whose input shapes match: the previous call's first (the usual
     * case), then the others in the order they were registered */
    Spec *spec = NULL;
    int first = self->last_hit < self->n_specs ? self->last_hit : 0;
    for (int n = 0; n < self->n_specs && spec == NULL; n++) {
        int k = n == 0 ? first : (n <= first ? n - 1 : n);
        const npy_intp *want = self->specs[k].in_dims;
        int ok = 1;
        for (Py_ssize_t i = 0; i < ni && ok; i++) {
            int nd = self->in_ndim[i];
            ok = dims_equal(PyArray_DIMS((PyArrayObject *)items[i]), want, nd);
            want += nd;
        }
        if (ok) {
            spec = &self->specs[k];
            self->last_hit = k;
        }
    }
    if (spec == NULL) return fall_back(self, argtuple);
    spec->used = self->tick;
    spec->busy++;
    PyObject *result = run_spec(self, argtuple, spec);
    spec->busy--;
    return result;
}

/* The call on the C path, once `spec` matched the input shapes. */
ALWAYS_INLINE PyObject *run_spec(Caller *self, PyObject *argtuple, Spec *spec) {
    const Py_ssize_t ni = self->n_in, ns = self->n_shared, no = self->n_out;
    PyObject *const *items = &PyTuple_GET_ITEM(argtuple, 0);
    void *slots[STACK_SLOTS];
    PyObject *held[STACK_SLOTS]; /* owned: shared values, then outputs */
    Py_ssize_t nheld = 0;
    PyObject *result = NULL;
    PyObject *old[4 * STACK_SLOTS]; /* owned: values replaced by the updates */
    int nold = 0;
    /* with updates, reading the shared values, the call and the installation are one step */
    sg_mutex *fn_lock = self->fn_lock ? lock_mutex(self->fn_lock) : NULL;
    if (fn_lock) acquire_released(fn_lock);
    for (Py_ssize_t i = 0; i < ni; i++)
        slots[i] = self->object_args ? (void *)items[i] : PyArray_DATA((PyArrayObject *)items[i]);
    /* shared values: the host array, unless a device holds the newest value */
    const npy_intp *sh_dims = self->sh_dims;
    for (Py_ssize_t i = 0; i < ns; i++) {
        PyObject *d = self->shared_dict[i];
        PyObject *pull = PyDict_GetItemWithError(d, s_pull);
        PyObject *host = (pull == NULL || pull == Py_None) ? PyDict_GetItemWithError(d, s_host) : NULL;
        if (PyErr_Occurred()) goto error;
        if (host == NULL || !array_ok(host, self->sh_type[i], self->sh_ndim[i]) ||
            !dims_equal(PyArray_DIMS((PyArrayObject *)host), sh_dims, self->sh_ndim[i])) {
            goto fallback;
        }
        sh_dims += self->sh_ndim[i];
        Py_INCREF(host);
        held[nheld++] = host;
        slots[ni + i] = self->object_args ? (void *)host : PyArray_DATA((PyArrayObject *)host);
    }
    /* outputs: the last call's array where nobody else holds it, else a fresh one */
    const npy_intp *out_dims = spec->out_dims;
    for (Py_ssize_t j = 0; j < no; j++) {
        PyObject **pool = &spec->recycled[2 * j];
        PyObject *o = NULL;
        for (int q = 0; q < 2 && o == NULL; q++)
            if (pool[q] != NULL && Py_REFCNT(pool[q]) == 1) o = pool[q];
        if (o != NULL)
            Py_INCREF(o);
        else
            o = PyArray_SimpleNew(self->out_ndim[j], (npy_intp *)out_dims, self->out_type[j]);
        if (o == NULL) goto error;
        out_dims += self->out_ndim[j];
        held[nheld++] = o;
        slots[ni + ns + j] = self->object_args ? (void *)o : PyArray_DATA((PyArrayObject *)o);
    }
    slots[ni + ns + no] = spec->arena;
    int32_t status;
    {
        sg_mutex *lock = lock_mutex(spec->lock);
        entry_fn entry = spec->entry;
        Py_BEGIN_ALLOW_THREADS
        mutex_wait(lock);
        status = entry(slots);
        mutex_release(lock);
        Py_END_ALLOW_THREADS
    }
    if (status != 0) goto fallback; /* the Python path retries, raises or handles it */

    PyObject **outs = &held[ns];
    for (Py_ssize_t j = 0; j < no; j++) { /* the pool becomes (this output, the newest other) */
        PyObject **pool = &spec->recycled[2 * j];
        PyObject *o = outs[j];
        if (pool[0] == o) continue;
        if (pool[1] == o) {
            pool[1] = pool[0];
            pool[0] = o;
            continue;
        }
        PyObject *drop = pool[1];
        Py_INCREF(o);
        pool[1] = pool[0];
        pool[0] = o;
        Py_XDECREF(drop); /* an array, so no Python code runs here */
    }
    const Py_ssize_t nu = self->n_user, nup = self->n_upd;
    PyObject *mapped[STACK_SLOTS];
    Py_ssize_t nmapped = 0;
    /* results in output_map order; a native output returned twice is copied the second time */
    for (Py_ssize_t i = 0; i < nu + nup; i++) {
        PyObject *o = outs[self->output_map[i]];
        if (self->copy[i]) {
            o = PyArray_NewCopy((PyArrayObject *)o, NPY_CORDER);
            if (o == NULL) goto error_mapped;
        } else {
            Py_INCREF(o);
        }
        mapped[nmapped++] = o;
    }
    /* all updates or none: the only step that can fail for a reason other than memory is
     * the wait in targets_ready, before anything is written */
    int bad = nup > 0 && targets_ready(self) < 0;
    for (Py_ssize_t k = 0; k < nup && !bad; k++)
        bad = install(self->target_dict[k], mapped[nu + k], old, &nold) < 0;
    if (bad) goto error_mapped;
    if (self->single) {
        result = mapped[0];
        Py_INCREF(result);
    } else {
        result = PyList_New(nu);
        if (result == NULL) goto error_mapped;
        for (Py_ssize_t i = 0; i < nu; i++) {
            Py_INCREF(mapped[i]);
            PyList_SET_ITEM(result, i, mapped[i]);
        }
    }
    self->fast_calls++;
error_mapped:
    if (fn_lock) {
        mutex_release(fn_lock);
        fn_lock = NULL;
    }
    for (Py_ssize_t i = 0; i < nmapped; i++) Py_DECREF(mapped[i]);
error:
    if (fn_lock) mutex_release(fn_lock);
    for (int i = 0; i < nold; i++) Py_DECREF(old[i]); /* after the lock: may run Python code */
    for (Py_ssize_t i = 0; i < nheld; i++) Py_DECREF(held[i]);
    return result;
fallback:
    if (fn_lock) mutex_release(fn_lock);
    for (Py_ssize_t i = 0; i < nheld; i++) Py_DECREF(held[i]);
    return fall_back(self, argtuple);
}

static PyObject *Caller_vectorcall(PyObject *callable, PyObject *const *vargs, size_t nargsf,
                                   PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !PyTuple_CheckExact(vargs[0])) {
        PyErr_SetString(PyExc_TypeError, "a fast caller takes one tuple of arguments");
        return NULL;
    }
    return Caller_run((Caller *)callable, vargs[0]);
}

static PyObject *Caller_call(PyObject *self, PyObject *args, PyObject *kw) {
    return PyVectorcall_Call(self, args, kw);
}

static PyMethodDef Caller_methods[] = {
    {"add", (PyCFunction)Caller_add, METH_VARARGS,
     "add(in_shapes, out_shapes, entry, arena, lock, keep) -> bool: register a specialisation."},
    {NULL}};

static PyGetSetDef Caller_getset[] = {
    {"fast_calls", (getter)Caller_get_fast_calls, NULL, "calls completed on the C path", NULL},
    {"n_specs", (getter)Caller_get_n_specs, NULL, "registered specialisations", NULL},
    {"replaced", (getter)Caller_get_replaced, NULL, "specialisations replaced by newer shapes", NULL},
    {NULL}};

static PyTypeObject CallerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "symgraph._fastcall.Caller",
    .tp_basicsize = sizeof(Caller),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The C call path of one compiled function (see symgraph/backends/llvm.py).",
    .tp_new = Caller_new,
    .tp_dealloc = (destructor)Caller_dealloc,
    .tp_traverse = (traverseproc)Caller_traverse,
    .tp_clear = (inquiry)Caller_tp_clear,
    .tp_call = Caller_call,
    .tp_vectorcall_offset = offsetof(Caller, vectorcall),
    .tp_methods = Caller_methods,
    .tp_getset = Caller_getset,
};

/* ---------------------------------------------------------------------------------------
 * FunctionBase: the base class of CompiledFunction.  Calling an instance runs its `_caller`
 * (a Caller directly, any other callable with the argument tuple) without a Python frame;
 * without a caller, or with keyword arguments, it calls the instance's `_call(*args)`.
 */
typedef struct {
    PyObject_HEAD
    PyObject *caller;
} FunctionBase;

static PyObject *FunctionBase_call(PyObject *self, PyObject *args, PyObject *kw) {
    PyObject *caller = ((FunctionBase *)self)->caller;
    if (caller != NULL && caller != Py_None && (kw == NULL || PyDict_GET_SIZE(kw) == 0)) {
        Py_INCREF(caller); /* the call may replace self._caller */
        PyObject *r = Py_TYPE(caller) == &CallerType ? Caller_run((Caller *)caller, args)
                                                     : PyObject_CallOneArg(caller, args);
        Py_DECREF(caller);
        return r;
    }
    PyObject *method = PyObject_GetAttr(self, s_call);
    if (method == NULL) return NULL;
    PyObject *r = PyObject_Call(method, args, kw);
    Py_DECREF(method);
    return r;
}

static int FunctionBase_traverse(FunctionBase *self, visitproc visit, void *arg) {
    Py_VISIT(self->caller);
    return 0;
}

static int FunctionBase_clear(FunctionBase *self) {
    Py_CLEAR(self->caller);
    return 0;
}

static void FunctionBase_dealloc(FunctionBase *self) {
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->caller);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef FunctionBase_members[] = {
    {"_caller", T_OBJECT, offsetof(FunctionBase, caller), 0,
     "the whole call path (called with the argument tuple), or None"},
    {NULL}};

static PyTypeObject FunctionBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "symgraph._fastcall.FunctionBase",
    .tp_basicsize = sizeof(FunctionBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Base of CompiledFunction: calls `_caller(args)` or `_call(*args)`.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)FunctionBase_dealloc,
    .tp_traverse = (traverseproc)FunctionBase_traverse,
    .tp_clear = (inquiry)FunctionBase_clear,
    .tp_call = FunctionBase_call,
    .tp_members = FunctionBase_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "symgraph._fastcall",
    "The C call path of llvm-compiled functions (optional; the Python path is the fallback).", -1,
    NULL};

PyMODINIT_FUNC PyInit__fastcall(void) {
    import_array();
#define INTERN(var, text) \
    if (!(var = PyUnicode_InternFromString(text))) return NULL;
    INTERN(s_host, "_host");
    INTERN(s_pull, "_pull");
    INTERN(s_version, "_version");
    INTERN(s_lock, "_lock");
    INTERN(s_device_state, "device_state");
    INTERN(s_acquire, "acquire");
    INTERN(s_release, "release");
    INTERN(s_locked, "locked");
    INTERN(s_call, "_call");
    if (!(one = PyLong_FromLong(1))) return NULL;
#ifndef _WIN32
    if (pthread_atfork(NULL, NULL, count_fork_in_child) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
#endif
    if (PyType_Ready(&ArenaLockType) < 0 || PyType_Ready(&CallerType) < 0 ||
        PyType_Ready(&FunctionBaseType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ArenaLockType);
    Py_INCREF(&CallerType);
    Py_INCREF(&FunctionBaseType);
    if (PyModule_AddObject(m, "ArenaLock", (PyObject *)&ArenaLockType) < 0 ||
        PyModule_AddObject(m, "Caller", (PyObject *)&CallerType) < 0 ||
        PyModule_AddObject(m, "FunctionBase", (PyObject *)&FunctionBaseType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_SPECS", MAX_SPECS) < 0 ||
        PyModule_AddIntConstant(m, "STALE_CALLS", STALE_CALLS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_ARRAYS", STACK_SLOTS - 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
