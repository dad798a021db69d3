"""Data stage: split specs (`specs`), reading and checking splits (`splits`), tokenisation and batching
(`features`), the generated built-in corpus (`builtin`) and the fixed Amazon carve (`carve`)."""
