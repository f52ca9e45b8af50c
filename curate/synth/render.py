"""What `curate synth` prints for people (`--json` prints the outcome's to_dict())."""

from __future__ import annotations

from rich.markup import escape

from curate.console import console
from curate.outcome import StageOutcome


def render_synth(out: StageOutcome) -> None:
    c, s = out.counts, out.summary
    lost = (f"; possibly paid {s['possibly_paid_attempts']} attempts (worst case {s['possibly_paid_tokens']} tokens, "
            f"${s['possibly_paid_cost']:.4f})" if s["possibly_paid_attempts"] else "")
    checks, facts = s["checks"], s["facts"]["unsupported"]
    gates = (f" + rejected by checks {c['rejected_check']}" if checks["consistency"] or checks["verify_labels"] else "") \
        + (f" + rejected for facts {c['rejected_facts']}" if facts == "drop" else "") \
        + (f" + to review {c['review']}" if facts == "review" else "")
    console.print(f"requested {c['requested']} = succeeded {c['succeeded']} + failed {c['failed']} + skipped by budget "
                  f"{c['skipped_budget']}{gates}  ->  {out.outputs['data']}")
    console.print(f"  from cache {c['from_cache']}, HTTP requests {s['http_requests']} (retries {s['retries']}, invalid "
                  f"replies {s['invalid_replies']}); billed tokens {s['prompt_tokens']}+{s['completion_tokens']}, "
                  f"${s['cost']:.4f}{lost}")
    if checks["consistency"] or checks["verify_labels"]:
        what = ([f"{checks['consistency']} answers agree"] if checks["consistency"] else []) + \
            (["the teacher accepts its labels"] if checks["verify_labels"] else [])
        console.print(f"  label checks ({', '.join(what)}): {c['checked']} rows checked, {c['rejected_check']} rejected; "
                      f"{s['check_requested']} check requests ({s['check_failed']} failed)")
    console.print(f"  claims {c['claims']}, unsupported {c['unsupported_claims']} in {c['flagged_rows']} flagged rows")
    for reason, n in sorted(s["failure_reasons"].items(), key=lambda kv: -kv[1]):
        console.print(f"  [red]{n} x[/] {escape(reason)}", highlight=False)
    if "failures" in out.outputs:
        hint = " (rerun with --retry-failed to send the failed ones again)" if c["failed"] or s["verify_failed"] else ""
        console.print(f"[yellow]failures:[/] {escape(out.outputs['failures'])}{hint}")
    if "review" in out.outputs:
        console.print(f"[yellow]for review:[/] {escape(out.outputs['review'])} (rows with unsupported claims: {c['review']})")
