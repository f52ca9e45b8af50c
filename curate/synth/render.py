"""What `curate synth` prints for people (`--json` prints the outcome's to_dict())."""

from __future__ import annotations

from rich.markup import escape

from curate.console import console
from curate.outcome import StageOutcome


def render_synth(out: StageOutcome) -> None:
    c, s = out.counts, out.summary
    lost = (f"; possibly paid {s['possibly_paid_attempts']} attempts (worst case {s['possibly_paid_tokens']} tokens, "
            f"${s['possibly_paid_cost']:.4f})" if s["possibly_paid_attempts"] else "")
    console.print(f"requested {c['requested']} = succeeded {c['succeeded']} + failed {c['failed']} + skipped by budget "
                  f"{c['skipped_budget']}  ->  {out.outputs['data']}")
    console.print(f"  from cache {c['from_cache']}, HTTP requests {s['http_requests']} (retries {s['retries']}, invalid "
                  f"replies {s['invalid_replies']}); billed tokens {s['prompt_tokens']}+{s['completion_tokens']}, "
                  f"${s['cost']:.4f}{lost}")
    console.print(f"  claims {c['claims']}, unsupported {c['unsupported_claims']} in {c['flagged_rows']} flagged rows")
    for reason, n in sorted(s["failure_reasons"].items(), key=lambda kv: -kv[1]):
        console.print(f"  [red]{n} x[/] {escape(reason)}", highlight=False)
    if "failures" in out.outputs:
        hint = " (rerun with --retry-failed to send the failed ones again)" if c["failed"] or s["verify_failed"] else ""
        console.print(f"[yellow]failures:[/] {escape(out.outputs['failures'])}{hint}")
