#!/usr/bin/env python3
"""Keeps the house livable (issue #13): no source file over 600 lines, no function over 120
lines, no `use` cycle between the files of a crate.

    python3 scripts/house-check.py [--max-file N] [--max-fn N] [PATH...]

PATHs default to the workspace's crates. Test code is left out: files under tests/ or
benches/, files named tests.rs, and the `#[cfg(test)] mod ... { }` block at the end of a file
(counted neither in the file's length nor as functions). Vendored (third_party/) and generated
(target/) trees are skipped. Exits 1 and lists every offender; 0 when all hold.
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {"target", "third_party", "tests", "benches", ".git", "fuzz", "corpus"}
FN_RE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def rust_files(paths):
    for p in paths:
        if os.path.isfile(p):
            yield p
            continue
        for d, dirs, files in os.walk(p):
            dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
            for f in sorted(files):
                if f.endswith(".rs") and f != "tests.rs":
                    yield os.path.join(d, f)


def strip_strings(line):
    """The line without string/char literals and // comments (for brace counting)."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def non_test_lines(lines):
    """Lines before a `#[cfg(test)]` that opens a module block running to the file's end."""
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]" and i + 1 < len(lines) and re.match(
            r"^\s*(pub\s+)?mod\s+\w+\s*\{", lines[i + 1]
        ):
            return lines[:i]
    return lines


def long_functions(lines, limit):
    """(name, first line, length) of every fn body longer than `limit` lines."""
    out = []
    i = 0
    while i < len(lines):
        m = FN_RE.match(lines[i])
        if not m:
            i += 1
            continue
        depth, parens, started, j = 0, 0, False, i
        while j < len(lines):
            code = strip_strings(lines[j])
            parens += code.count("(") + code.count("[") - code.count(")") - code.count("]")
            if not started and parens <= 0 and code.rstrip().endswith(";"):
                break  # a declaration without a body
            depth += code.count("{") - code.count("}")
            started = started or "{" in code
            if started and depth <= 0:
                break
            j += 1
        if started and j - i + 1 > limit:
            out.append((m.group(7), i + 1, j - i + 1))
        i += 1 if not started else 1
    return out


def module_of(path, crate_src):
    rel = os.path.relpath(path, crate_src)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def use_cycles(files):
    """Cycles between files of one crate through `crate::a::b` paths (a file imports a
    module if it names it, or an item of it, after `crate::`)."""
    crates = {}
    for f in files:
        d = os.path.dirname(f)
        while d != ROOT and not os.path.isfile(os.path.join(d, "Cargo.toml")):
            d = os.path.dirname(d)
        src = os.path.join(d, "src")
        if f.startswith(src + os.sep) and "/bin/" not in f:
            crates.setdefault(src, []).append(f)
    cycles = []
    for src, fs in crates.items():
        mods = {tuple(module_of(f, src)): f for f in fs}
        edges = {f: set() for f in fs}
        for f in fs:
            text = open(f, encoding="utf-8").read()
            text = "\n".join(non_test_lines(text.splitlines()))
            for m in re.finditer(r"crate::((?:\w+::)*\w+)", text):
                parts = tuple(m.group(1).split("::"))
                for k in range(len(parts), 0, -1):
                    target = mods.get(parts[:k])
                    if target:
                        if target != f and parts[:k] != tuple(module_of(f, src))[:k]:
                            edges[f].add(target)
                        break
            # `super::x` from a file names its sibling x.
            mine = module_of(f, src)
            parent = mine[:-1] if os.path.basename(f) not in ("mod.rs",) else mine[:-1]
            for m in re.finditer(r"\bsuper::(\w+)", text):
                target = mods.get(tuple(parent) + (m.group(1),)) or mods.get(tuple(parent))
                if target and target != f:
                    edges[f].add(target)
        # A module may use its own submodules and a submodule its parent (the parent owns
        # it); only edges between files that are not nested in one another count.
        def nested(a, b):
            ma, mb = module_of(a, src), module_of(b, src)
            return ma[: len(mb)] == mb or mb[: len(ma)] == ma

        graph = {a: {b for b in edges[a] if not nested(a, b)} for a in fs}
        cycles.extend(strongly_connected(graph))
    return cycles


def strongly_connected(graph):
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-file", type=int, default=600)
    ap.add_argument("--max-fn", type=int, default=120)
    ap.add_argument("paths", nargs="*")
    args = ap.parse_args()
    paths = args.paths or [
        os.path.join(ROOT, d)
        for d in sorted(os.listdir(ROOT))
        if (os.path.isfile(os.path.join(ROOT, d, "Cargo.toml")) or d == "drivers")
        and d not in SKIP_DIRS
    ]
    bad = 0
    files = list(rust_files(paths))
    for f in files:
        lines = non_test_lines(open(f, encoding="utf-8").read().splitlines())
        rel = os.path.relpath(f, ROOT)
        if len(lines) > args.max_file:
            print(f"{rel}: {len(lines)} lines (at most {args.max_file} outside its tests)")
            bad += 1
        for name, line, n in long_functions(lines, args.max_fn):
            print(f"{rel}:{line}: fn {name} is {n} lines (at most {args.max_fn})")
            bad += 1
    for comp in use_cycles(files):
        names = ", ".join(os.path.relpath(f, ROOT) for f in comp)
        print(f"use cycle between files: {names}")
        bad += 1
    if bad:
        print(f"house-check: {bad} finding(s) in {len(files)} files")
        return 1
    print(f"house-check: {len(files)} files, none over {args.max_file} lines, no fn over "
          f"{args.max_fn} lines, no cycle between files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
