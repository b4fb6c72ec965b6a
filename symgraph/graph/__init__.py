"""Graph IR: types, variables, apply nodes, ops and the FunctionGraph."""
