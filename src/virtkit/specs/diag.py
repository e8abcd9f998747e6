"""What ``virtkit diag bundle`` made: the tarball, its size, and what went into it."""

from __future__ import annotations

from pydantic import Field

from virtkit.specs.common import _View


class DiagBundle(_View):
    """A diagnostics bundle written to disk (its MANIFEST.json lists every file)."""

    path: str = Field(description="Where the tarball (.tar.gz, mode 0600) was written.")
    size: int = Field(description="Its size in bytes.")
    files: int = Field(description="How many files it holds, MANIFEST.json included.")
    vms: list[str] = Field(description="The VMs examined in full (doctor vm, seed, logs).")
    truncated: list[str] = Field(
        default_factory=list, description="Files cut to their tail by the per-file cap."
    )
    skipped: list[str] = Field(
        default_factory=list, description="What was left out, and why (the total cap, ...)."
    )
    redactions: dict[str, int] = Field(
        default_factory=dict, description="Secrets replaced by '(redacted)', counted by kind."
    )
    errors: list[str] = Field(
        default_factory=list, description="What could not be collected (the rest still was)."
    )
