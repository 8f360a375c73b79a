"""The zygote's request parser (python/scalable/_zygote.py): what a
trampoline sends is checked before anything is forked."""

import pytest

from scalable._zygote import Request


def test_a_request_is_pid_cwd_args_then_env():
    req = Request(b"12\0/tmp\0" b"2\0a.in\0a.out\0" b"K=V\0E=\0", [3, 4, 5])
    assert (req.pid, req.cwd, req.args) == (12, "/tmp", ["a.in", "a.out"])
    assert req.env == {"K": "V", "E": ""}


@pytest.mark.parametrize("body, fds, why", [
    (b"", [0, 1, 2], "0 fields"),
    (b"1\0/\0", [0, 1, 2], "2 fields"),
    (b"1\0/\x009\0a\0", [0, 1, 2], "9 arguments announced"),
    (b"x\0/\x000\0", [0, 1, 2], "invalid literal"),
    (b"1\0/\x000\0", [0, 1], "expected 3 file descriptors"),
])
def test_a_malformed_request_is_refused(body, fds, why):
    with pytest.raises(ValueError, match=why):
        Request(body, fds)
