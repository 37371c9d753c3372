#!/usr/bin/env python3
"""Summarise an Autobahn|Testsuite report (index.json) and gate on it.

Usage: autobahn_check.py REPORT_DIR/index.json [--agent NAME] [--markdown FILE]

Prints a Markdown table per section (the case id's first number) counting each
case under its worse outcome of `behavior` and `behaviorClose`, then lists every
failing case. Exit status: 0 when every case's behavior and behaviorClose are
OK or INFORMATIONAL; 1 when any is NON-STRICT, FAILED, UNIMPLEMENTED (or
anything else); 2 when the report can't be read or holds no cases.
"""

import argparse
import json
import os
import sys

PASS = ("OK", "INFORMATIONAL")
COLUMNS = ("OK", "INFORMATIONAL", "NON-STRICT", "FAILED", "UNIMPLEMENTED")
# Worse outcomes sort later; unknown strings count as FAILED.
RANK = {"OK": 0, "INFORMATIONAL": 1, "NON-STRICT": 2, "UNIMPLEMENTED": 3, "FAILED": 4}


def case_key(case_id):
    parts = []
    for p in case_id.split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return parts


def worse(a, b):
    return a if RANK.get(a, 5) >= RANK.get(b, 5) else b


def column_of(status):
    return status if status in COLUMNS else "FAILED"


def load_detail(report_dir, entry):
    """Best-effort one-line reason from the per-case report file."""
    name = entry.get("reportfile")
    if not name:
        return ""
    try:
        with open(os.path.join(report_dir, name)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return ""
    bits = []
    for key in ("result", "resultClose"):
        text = data.get(key)
        if text:
            bits.append(" ".join(str(text).split()))
    text = " | ".join(bits)
    return text[:200] + ("..." if len(text) > 200 else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("index", help="path to the report's index.json")
    ap.add_argument("--agent", help="agent to check (default: every agent in the report)")
    ap.add_argument("--markdown", help="also write the Markdown table to this file")
    args = ap.parse_args(argv)

    try:
        with open(args.index) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print("autobahn_check: cannot read %s: %s" % (args.index, e), file=sys.stderr)
        return 2
    if not isinstance(index, dict) or not index:
        print("autobahn_check: %s has no agents" % args.index, file=sys.stderr)
        return 2
    agents = sorted(index)
    if args.agent:
        if args.agent not in index:
            print("autobahn_check: agent %r not in report (have: %s)"
                  % (args.agent, ", ".join(agents)), file=sys.stderr)
            return 2
        agents = [args.agent]

    report_dir = os.path.dirname(os.path.abspath(args.index))
    lines = []
    failures = []
    total_cases = 0
    for agent in agents:
        cases = index[agent]
        if not isinstance(cases, dict) or not cases:
            print("autobahn_check: agent %r has no cases" % agent, file=sys.stderr)
            return 2
        sections = {}
        for case_id in sorted(cases, key=case_key):
            entry = cases[case_id]
            behavior = str(entry.get("behavior", "MISSING"))
            close = str(entry.get("behaviorClose", "MISSING"))
            status = worse(behavior, close)
            row = sections.setdefault(case_id.split(".")[0], dict.fromkeys(COLUMNS, 0))
            row[column_of(status)] += 1
            total_cases += 1
            if behavior not in PASS or close not in PASS:
                failures.append((agent, case_id, behavior, close, entry))

        lines.append("### Autobahn results: %s" % agent)
        lines.append("")
        lines.append("| section | " + " | ".join(COLUMNS) + " | total |")
        lines.append("|---|" + "---:|" * (len(COLUMNS) + 1))
        totals = dict.fromkeys(COLUMNS, 0)
        for section in sorted(sections, key=case_key):
            row = sections[section]
            for c in COLUMNS:
                totals[c] += row[c]
            lines.append("| %s | %s | %d |" % (
                section, " | ".join(str(row[c]) for c in COLUMNS), sum(row.values())))
        lines.append("| **all** | %s | **%d** |" % (
            " | ".join("**%d**" % totals[c] for c in COLUMNS), sum(totals.values())))
        lines.append("")

    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")

    if failures:
        print("Failing cases (%d of %d):" % (len(failures), total_cases))
        for agent, case_id, behavior, close, entry in failures:
            extra = []
            if "remoteCloseCode" in entry:
                extra.append("remoteCloseCode=%s" % entry["remoteCloseCode"])
            if "duration" in entry:
                extra.append("duration=%sms" % entry["duration"])
            prefix = "%s " % agent if len(agents) > 1 else ""
            print("- %scase %s: behavior=%s behaviorClose=%s %s"
                  % (prefix, case_id, behavior, close, " ".join(extra)))
            detail = load_detail(report_dir, entry)
            if detail:
                print("    %s" % detail)
        return 1
    print("All %d cases OK or INFORMATIONAL." % total_cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
