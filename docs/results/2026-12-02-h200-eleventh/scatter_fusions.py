"""From XLA's after-optimizations HLO dumps (--xla_dump_to DIR --xla_dump_hlo_as_text), print every fusion whose
computation holds a scatter: the calling instruction (shapes, layouts, operands) and the fused computation's body.
Why: the embedding-gradient scatters cost 0.6 ms a call in phase 1 but 2.4 ms in phase 3 (tenth sitting's profile),
and the dump says what XLA made of them in each.

    python scatter_fusions.py DUMP_DIR [MAX_LINES_PER_COMPUTATION]
"""
import glob
import re
import sys


def computations(text):
    name, body = None, []
    for line in text.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if name is None and m:
            name, body = m.group(1), [line]
        elif name is not None:
            body.append(line)
            if line.strip() == "}":
                yield name, body
                name = None


def main():
    root = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    for path in sorted(glob.glob(f"{root}/*after_optimizations.txt")):
        text = open(path).read()
        comps = dict(computations(text))
        fused = {n for n, b in comps.items() if any(" scatter(" in ln for ln in b)}
        if not fused:
            continue
        print(f"==== {path.split('/')[-1]}: {len(fused)} computation(s) with a scatter")
        callers = [ln.strip() for b in comps.values() for ln in b if "calls=" in ln
                   and any(re.search(rf"calls=%?{re.escape(f)}\b", ln) for f in fused)]
        for ln in callers:
            print("CALL", ln[:600])
        for f in sorted(fused):
            body = comps[f]
            print(f"-- {f} ({len(body)} lines)")
            for ln in body[:limit]:
                print("   ", ln.strip()[:400])


if __name__ == "__main__":
    main()
