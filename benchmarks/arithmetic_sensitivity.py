"""How much a run's result depends on the CPU's arithmetic rather than on its spec.

The same spec (same seed, same initial weights, same batch order) is trained in fresh processes
that differ only in which kernels TensorFlow uses: oneDNN's (the default on x86, whose choice of
kernel depends on the CPU's instruction set) and TensorFlow's own (``TF_ENABLE_ONEDNN_OPTS=0``).
Each computes the same mathematics with different rounding, which is what another CPU does. A
result that moves between the two variants moves between machines; ``normbench check``'s
tolerances and the README's verdicts must not rest on a difference smaller than that.

    python benchmarks/arithmetic_sensitivity.py [--suite standard] [--models vgg16] \
        [--strategies batchnorm,none] [--data-dir DIR] [--out runs/arithmetic]   (names or glob patterns)

Prints, per run and variant, the test accuracy, the validation accuracy per epoch, and the
largest difference between the variants; the records are kept under ``--out``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

VARIANTS = {"onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "plain-tf": {"TF_ENABLE_ONEDNN_OPTS": "0"}}

CHILD = """
import json, sys
from normbench.builtins import load_builtins
from normbench.runner import run
from normbench.spec import RunSpec
load_builtins()
spec = RunSpec.from_dict(json.loads(sys.argv[1]))
record = run(spec, data_dir=sys.argv[2] or None, log=lambda _m: None)
with open(sys.argv[3], "w") as f:
    json.dump(record, f)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="standard")
    p.add_argument("--models", default="vgg16")
    p.add_argument("--strategies", default="batchnorm,none")
    p.add_argument("--datasets", default="cifar10")
    p.add_argument("--data-dir", default=os.environ.get("NORMBENCH_DATA_DIR", ""))
    p.add_argument("--out", default="runs/arithmetic")
    args = p.parse_args()

    from normbench.builtins import load_builtins
    from normbench.suites import get_suite

    load_builtins()
    pick = {k: set(v.split(",")) for k, v in (("model", args.models), ("strategy", args.strategies),
                                               ("dataset", args.datasets))}
    def chosen(value, patterns):  # names or glob patterns
        return any(fnmatch.fnmatchcase(value, p) for p in patterns)

    specs = [s for s in get_suite(args.suite).specs if chosen(s.model, pick["model"])
             and chosen(s.strategy, pick["strategy"]) and chosen(s.dataset, pick["dataset"])]
    if not specs:
        p.error(f"no run of suite {args.suite!r} matches models={args.models} strategies={args.strategies} "
                f"datasets={args.datasets}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for spec in specs:
        for variant, env in VARIANTS.items():
            path = out / f"{spec.run_id}-{variant}.json"
            if not path.exists():
                print(f"training {spec.label} with {variant} kernels ...", flush=True)
                subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec.to_dict()), args.data_dir, str(path)],
                               env={**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=True)
            results[(spec.label, variant)] = json.loads(path.read_text())
    print(f"\n{'run':<36}{'kernels':<10}{'status':<9}{'test acc':>9}  val acc per epoch")
    for spec in specs:
        accs = []
        for variant in VARIANTS:
            r = results[(spec.label, variant)]
            acc = (r.get("test") or {}).get("accuracy")
            accs.append(acc)
            curve = " ".join(f"{h['val_accuracy']:.3f}" for h in r["history"])
            print(f"{spec.label:<36}{variant:<10}{r['status']:<9}{'-' if acc is None else format(acc, '.4f'):>9}  {curve}")
        if None not in accs:
            print(f"{'':<36}difference in test accuracy between the kernels: {abs(accs[0] - accs[1]):.4f}")
    diffs = {}
    for spec in specs:
        a, b = (results[(spec.label, v)] for v in VARIANTS)
        if a["status"] != b["status"]:
            print(f"{spec.label}: status differs between the kernels ({a['status']} / {b['status']})")
        elif (a.get("test") or {}).get("accuracy") is not None and (b.get("test") or {}).get("accuracy") is not None:
            diffs[spec.label] = abs(a["test"]["accuracy"] - b["test"]["accuracy"])
    if diffs:
        import statistics

        worst = max(diffs, key=diffs.get)
        print(f"\n|test accuracy difference| over {len(diffs)} runs: median {statistics.median(diffs.values()):.4f}, "
              f"max {diffs[worst]:.4f} ({worst}); {sum(d > 0 for d in diffs.values())} of {len(diffs)} differ at all")
    env = next(iter(results.values()))["environment"]
    print(f"\n{env.get('device')}; {env.get('backend')} {env.get('backend_version')}, keras {env.get('keras')}; "
          f"records in {out}")


if __name__ == "__main__":
    main()
