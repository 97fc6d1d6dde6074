#!/usr/bin/env python3
"""The layering check of docs/architecture.md, read from the object files' symbols.

    scripts/layering.py BUILD_DIR

Which unit (a .c file) calls which is taken from `nm` on its object file: a unit depends on
another when it uses a symbol the other defines. A header named differently from its
implementation therefore cannot hide a dependency, and inline functions in headers cost
nothing. It fails (exit 1) on:

- a cycle among units (each cycle is printed with one symbol per edge, to say why);
- a call against the folder table: a unit in src/<folder>/ may call units of the folders the
  table lists for it, and of its own folder; src/ itself (the program) may call every folder;
- a unit over 1,000 lines.

The folder table is the one of the layout in docs/architecture.md (base, proto, core, http,
handler, shm, lua).
"""
import os
import subprocess
import sys

MAY_CALL = {
    "program": {"base", "proto", "core", "http", "handler", "shm", "lua", "program"},
    "lua": {"handler", "shm", "core", "proto", "base"},
    "http": {"shm", "core", "proto", "base"},
    "handler": {"shm", "core", "proto", "base"},
    "shm": {"proto", "base"},
    "core": {"proto", "base"},
    "proto": {"base"},
    "base": set(),
}
MAX_LINES = 1000


def units(build, root):
    """(unit name, object path, source path) for every object compiled from src/: the library
    and the program's main. Generated sources (the embedded Lua files) are data, not units; an
    object whose source is gone (a file since moved) is stale and skipped."""
    out = []
    for target in ("mgcore.dir", "moongate.dir"):
        base = os.path.join(build, "CMakeFiles", target, "src")
        for top, _, files in os.walk(base):
            for f in files:
                if f.endswith(".c.o"):
                    obj = os.path.join(top, f)
                    src = os.path.join("src", os.path.relpath(obj, base))[:-2]
                    if os.path.exists(os.path.join(root, src)):
                        out.append((os.path.relpath(src, "src")[:-2], obj, src))
    return sorted(out)


def folder(unit):
    return unit.split("/", 1)[0] if "/" in unit else "program"


def symbols(obj):
    """(defined, used) global symbols of one object file."""
    text = subprocess.run(["nm", "-g", obj], capture_output=True, text=True, check=True).stdout
    defined, used = set(), set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            used.add(parts[1])
        elif len(parts) == 3 and parts[1] in "TDBRCVWG":
            defined.add(parts[2])
    return defined, used


def cycles(graph):
    """Strongly connected components with more than one unit (Tarjan's algorithm)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build = sys.argv[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = units(build, root)
    if not found:
        sys.exit("layering: no object files of src/ under %s (build first)" % build)
    owner, used_by = {}, {}
    for unit, obj, _ in found:
        defined, used = symbols(obj)
        for s in defined:
            owner.setdefault(s, unit)
        used_by[unit] = used
    graph = {u: set() for u, _, _ in found}
    why = {}
    for unit, used in used_by.items():
        for s in used:
            dep = owner.get(s)
            if dep and dep != unit:
                graph[unit].add(dep)
                why.setdefault((unit, dep), s)
    failures = []
    for comp in cycles(graph):
        edges = ["%s -> %s (%s)" % (a, b, why[(a, b)]) for a in comp for b in sorted(graph[a]) if b in comp]
        failures.append("cycle among %d units: %s\n    %s" % (len(comp), ", ".join(comp), "\n    ".join(edges)))
    for unit in sorted(graph):
        for dep in sorted(graph[unit]):
            a, b = folder(unit), folder(dep)
            if a != b and b not in MAY_CALL.get(a, set()):
                failures.append("%s (%s/) calls %s (%s/): %s, which the folder table does not allow"
                                % (unit, a, dep, b, why[(unit, dep)]))
    for unit, _, src in found:
        with open(os.path.join(root, src), encoding="utf-8", errors="replace") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            failures.append("%s has %d lines (at most %d)" % (src, n, MAX_LINES))
    print("layering: %d units, %d dependencies between them" % (len(graph), sum(len(v) for v in graph.values())))
    for f in failures:
        print("layering: " + f)
    if failures:
        sys.exit(1)
    print("layering: no cycle, every call allowed by the folder table, every unit within %d lines" % MAX_LINES)


if __name__ == "__main__":
    main()
