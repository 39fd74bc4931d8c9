"""A fetch with some partitions over quota: the served results and the THROTTLED ones
come back in the order of the request."""

from __future__ import annotations

from talos.broker.service import with_refused
from talos.proto import talos_pb2 as pb


def test_refused_results_return_to_their_places() -> None:
    served = pb.FetchResponse()
    served.results.add(topic="a", partition=0, records=b"x")
    served.results.add(topic="c", partition=0, records=b"y")
    refused = {
        1: pb.FetchResult(topic="b", partition=0, error=pb.Error(code=9, retry_after_ms=5)),
        3: pb.FetchResult(topic="d", partition=0, error=pb.Error(code=9, retry_after_ms=7)),
    }
    merged = with_refused(served, refused)
    assert [r.topic for r in merged.results] == ["a", "b", "c", "d"]
    assert [r.error.retry_after_ms for r in merged.results] == [0, 5, 0, 7]


def test_nothing_refused_is_the_response_itself() -> None:
    served = pb.FetchResponse()
    assert with_refused(served, {}) is served
    assert list(with_refused(pb.FetchResponse(), {0: pb.FetchResult(topic="a")}).results) == [
        pb.FetchResult(topic="a")
    ]
