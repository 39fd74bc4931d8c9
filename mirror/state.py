"""The mirror descriptor of a topic: one typed value, its transitions, and the rules on it.

A topic's znode carries ``mirror`` when a link copies into it (or copied, or
will copy). Everything that decides safety reads this value and nothing
else: the broker (may producers write? may this MirrorAppend land?), the
link worker (may it copy into this topic, at which epoch?), status, offset
sync, promote, failback and resync. The rules are plain functions here so
the modules cannot disagree.

Phases, and the transitions between them (each a function below):

- ``MIRRORING``: ``link`` copies into it at ``epoch``; producers are refused.
- ``PROMOTING``: promotion has fenced the link (``fence``: next epoch) and
  reads the recovery point; still read-only, no append lands.
- ``PROMOTED``: writable (``promote``); the link's appends are refused.
- ``FAILBACK_PENDING``: an old primary between promote and failback
  (``pending_reverse``): read-only, and the reverse link may not append yet
  (its log still holds the diverged suffix); ``finish_failback`` makes it a
  plain mirror of the reverse link.
- ``RESYNCING``: ``talos mirror resync`` archives and truncates the copy
  (``begin_resync``: next epoch, nothing appends); ``finish_resync`` hands
  it back to the link, with the source incarnation it now copies.

The znode form is a JSON object. Descriptors written before this module
(a ``promoted`` flag, " (promoting)" / " (failback pending)" suffixes on the
link name, ``failback: "pending"``) are still read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from talos.errors import CoordinationError, InvalidArgument

_LEGACY_PROMOTING = " (promoting)"
_LEGACY_PENDING = " (failback pending)"


class Phase(enum.Enum):
    MIRRORING = "mirroring"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    FAILBACK_PENDING = "failback_pending"
    RESYNCING = "resyncing"


@dataclass(frozen=True)
class MirrorState:
    """What a topic is to the links: whose copy, at which mirror epoch, in which phase.

    ``source_incarnation`` is the incarnation id of the source topic this copy
    was taken from (None: not recorded, e.g. a source cluster that has no
    incarnation ids yet); a source whose incarnation differs is not the
    history this topic holds.
    """

    link: str
    source: str
    source_topic: str
    epoch: int = 1
    phase: Phase = Phase.MIRRORING
    promoted_ms: int | None = None
    source_incarnation: str | None = None

    def __post_init__(self) -> None:
        for name in ("link", "source", "source_topic"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidArgument(f"mirror.{name}: must be a non-empty string, got {value!r}")
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0:
            raise InvalidArgument(f"mirror.epoch: must be an integer >= 0, got {self.epoch!r}")
        if not isinstance(self.phase, Phase):
            raise InvalidArgument(f"mirror.phase: must be a Phase, got {self.phase!r}")

    # ---- what the phase allows ------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Producers may write (the topic was promoted)."""
        return self.phase is Phase.PROMOTED

    @property
    def promoted(self) -> bool:
        return self.phase is Phase.PROMOTED

    def append_refusal(self, link: str, epoch: int) -> str:
        """Why a MirrorAppend of ``link`` at mirror ``epoch`` must be refused ("" = accept).

        In FAILBACK_PENDING and RESYNCING the epoch was bumped, so no worker's
        append lands; only the tool that holds the new epoch appends then (its
        probe makes a stale owner notice a truncation; see failover.surgery).
        Workers never copy in those phases (:func:`target_problem`).
        """
        if self.phase in (Phase.PROMOTING, Phase.PROMOTED):
            return (
                f"it is {self.phase.value} at mirror epoch {self.epoch}; appends of link {link} "
                f"at epoch {epoch} are refused"
            )
        if link and link != self.link:
            return f"it is a mirror of link {self.link}, not of {link}"
        if epoch != self.epoch:
            return f"it is at mirror epoch {self.epoch}; appends for epoch {epoch} are refused"
        return ""

    # ---- serialization --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The znode form. ``promoted`` is kept for brokers of the previous release."""
        return {
            "link": self.link,
            "source": self.source,
            "source_topic": self.source_topic,
            "epoch": self.epoch,
            "phase": self.phase.value,
            "promoted": self.promoted,
            "promoted_ms": self.promoted_ms,
            "source_incarnation": self.source_incarnation,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], topic: str = "?") -> MirrorState:
        """Parse the znode form (and the untyped form of earlier releases)."""
        try:
            link = str(raw["link"])
            phase_name = raw.get("phase")
            if phase_name is not None:
                phase = Phase(phase_name)
            elif link.endswith(_LEGACY_PROMOTING):
                link, phase = link[: -len(_LEGACY_PROMOTING)], Phase.PROMOTING
            elif link.endswith(_LEGACY_PENDING) or raw.get("failback") == "pending":
                link = link.removesuffix(_LEGACY_PENDING)
                phase = Phase.FAILBACK_PENDING
            elif raw.get("promoted"):
                phase = Phase.PROMOTED
            else:
                phase = Phase.MIRRORING
            source = str(raw.get("source") or link.split(":", 1)[0])
            promoted_ms = raw.get("promoted_ms")
            incarnation = raw.get("source_incarnation")
            return cls(
                link=link,
                source=source,
                source_topic=str(raw.get("source_topic") or topic),
                epoch=int(raw.get("epoch", 0)),
                phase=phase,
                promoted_ms=None if promoted_ms is None else int(promoted_ms),
                source_incarnation=None if incarnation is None else str(incarnation),
            )
        except (KeyError, TypeError, ValueError, InvalidArgument) as exc:
            raise CoordinationError(
                f"topic {topic!r}: malformed mirror descriptor {dict(raw)!r} ({exc})"
            ) from None


def parse_mirror(raw: object, topic: str = "?") -> MirrorState | None:
    """A topic znode's ``mirror`` value (None, a MirrorState or its dict) as a MirrorState."""
    if raw is None or isinstance(raw, MirrorState):
        return raw
    if isinstance(raw, Mapping):
        return MirrorState.from_dict(raw, topic)
    raise InvalidArgument(f"mirror: must be a MirrorState or None, got {type(raw).__name__}")


# ---- transitions (pure) ---------------------------------------------------------------------


def new_mirror(
    link: str, source: str, source_topic: str, source_incarnation: str | None = None
) -> MirrorState:
    """The descriptor of a target topic a link creates."""
    return MirrorState(link, source, source_topic, 1, Phase.MIRRORING, None, source_incarnation)


def fence(state: MirrorState) -> MirrorState:
    """Promotion, step 1: the next epoch (the link's appends are refused), still read-only.

    Idempotent on a state already fenced or promoted.
    """
    if state.phase in (Phase.PROMOTING, Phase.PROMOTED):
        return state
    return replace(state, epoch=state.epoch + 1, phase=Phase.PROMOTING)


def promote(state: MirrorState, now_ms: int) -> MirrorState:
    """Promotion, step 2 (after the recovery point is read): writable.

    From a fenced state at the same epoch; from any other, through :func:`fence`.
    """
    if state.phase is Phase.PROMOTED:
        return state
    fenced = fence(state)
    return replace(fenced, phase=Phase.PROMOTED, promoted_ms=now_ms)


def pending_reverse(
    current: MirrorState | None, reverse_link: str, source: str, source_topic: str
) -> MirrorState:
    """An old primary's topic between promote and failback: read-only, nobody appends.

    The epoch continues from whatever the topic had, so an older worker is
    fenced too. Idempotent.
    """
    if (
        current is not None
        and current.phase is Phase.FAILBACK_PENDING
        and current.link == reverse_link
    ):
        return current
    epoch = current.epoch + 1 if current is not None else 1
    return MirrorState(reverse_link, source, source_topic, epoch, Phase.FAILBACK_PENDING)


def finish_failback(state: MirrorState) -> MirrorState:
    """The old primary once failback truncated it: a plain mirror of the reverse link."""
    if state.phase is Phase.MIRRORING:
        return state
    if state.phase is not Phase.FAILBACK_PENDING:
        raise InvalidArgument(f"mirror: failback ends a pending failback, not {state.phase.value}")
    return replace(state, phase=Phase.MIRRORING)


def begin_resync(state: MirrorState) -> MirrorState:
    """Resync, step 1: the next epoch; no append lands while the copy is replaced."""
    if state.phase is Phase.RESYNCING:
        return state
    if state.phase is not Phase.MIRRORING:
        raise InvalidArgument(
            f"mirror: only a mirroring topic can be resynced; this one is {state.phase.value}"
        )
    return replace(state, epoch=state.epoch + 1, phase=Phase.RESYNCING)


def finish_resync(state: MirrorState, source_incarnation: str | None) -> MirrorState:
    """Resync, step 2: the link copies again, from the source incarnation it now holds."""
    if state.phase is Phase.MIRRORING:
        return state
    if state.phase is not Phase.RESYNCING:
        raise InvalidArgument(f"mirror: resync ends a resync, not {state.phase.value}")
    return replace(state, phase=Phase.MIRRORING, source_incarnation=source_incarnation)


def lifted(
    step: Callable[[MirrorState], MirrorState],
) -> Callable[[MirrorState | None], MirrorState | None]:
    """``step`` for ``TopicStore.update_mirror``: a topic that is no longer a mirror stays so."""
    return lambda current: None if current is None else step(current)


# ---- the loop and target rules (pure) -------------------------------------------------------


def loop_reason(link_source: str, link_target: str, source_mirror: MirrorState | None) -> str:
    """Why a link must not copy a source topic ("" = it may).

    A source topic that is an unpromoted mirror whose own source is the
    link's target holds the target's data: copying it would send it home.
    """
    if source_mirror is None or source_mirror.promoted:
        return ""
    if source_mirror.source == link_target:
        return (
            f"it is a mirror of {source_mirror.source_topic!r} from {link_target} "
            f"(link {source_mirror.link}); copying it back would loop"
        )
    return ""


def target_problem(link: str, source_topic: str, target_mirror: MirrorState | None) -> str:
    """Why an existing target topic is not a topic ``link`` may copy ``source_topic`` into
    ("" = it is). Used by the worker, status and offset sync alike."""
    if target_mirror is None:
        return "target topic exists and is not a mirror; refusing to write into it"
    if target_mirror.link != link or target_mirror.source_topic != source_topic:
        return (
            f"target topic is a mirror of {target_mirror.source_topic!r} through link "
            f"{target_mirror.link}, not of {source_topic!r} through {link}"
        )
    if target_mirror.phase is Phase.MIRRORING:
        return ""
    why = {
        Phase.PROMOTING: "is being promoted",
        Phase.PROMOTED: "was promoted",
        Phase.FAILBACK_PENDING: "waits for its failback to finish",
        Phase.RESYNCING: "is being resynced",
    }[target_mirror.phase]
    return f"target topic {why} (mirror epoch {target_mirror.epoch}); this link does not copy it"
