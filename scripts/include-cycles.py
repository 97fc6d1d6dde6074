#!/usr/bin/env python3
"""Prints the cycles in src/'s include graph, taking a .c file and its .h as one module (the
way a reader follows dependencies). Exits 1 when there is one: `make test` runs it, so the
layering of docs/architecture.md stays true."""
import collections
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
deps = collections.defaultdict(set)
for f in os.listdir(SRC):
    if f.endswith((".c", ".h")):
        mod = f.rsplit(".", 1)[0]
        for inc in re.findall(r'#include "([a-z_0-9]+)\.h"', open(os.path.join(SRC, f)).read()):
            if inc != mod:
                deps[mod].add(inc)

index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in deps.get(v, ()):
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
            cycles.append(sorted(comp))


for v in list(deps):
    if v not in index:
        visit(v)
for c in cycles:
    print("include cycle: " + " <-> ".join(c))
print("include graph of src/: %d modules, %d cycles" % (len(deps), len(cycles)))
sys.exit(1 if cycles else 0)
