"""After a kill -9 a kept chat polls again as soon as the poll it left behind is released.

The server holds an idle poll for its hold time and answers it then, even to a client that is
gone; a second poll before that ends the session (the strict simulator does so). bridged keeps
the longest hold it observed with the chat's state and waits only that long (plus a margin)
from the kept time of the last poll, not 0.9 x clientPollTimeout.
"""

from __future__ import annotations

from pathlib import Path

from bridged.salesforce.liveagent.actor import HOLD_MARGIN_S, poll_held_for
from tests.ops.resume_time import measure_resume


async def test_a_chat_resumes_once_the_old_poll_is_released_not_client_poll_timeout_later(
        tmp_path: Path) -> None:
    # Polls are held 0.5 s; clientPollTimeout is 60 s, so the old rule would freeze the chat
    # 54 s, past the bound of the wait for the agent's message.
    result = await measure_resume(tmp_path, hold_s=0.5, client_poll_timeout=60, timeout=20)
    print(f"resumed {result.from_ready:.2f} s after the new process was ready "
          f"({result.from_kill:.2f} s after the kill)")
    assert not result.chat_ended  # no second poll overlapped the one still held


def test_the_wait_is_the_longest_hold_seen_at_that_host_or_the_old_rule() -> None:
    holds = {"https://a.example/chat/rest/": 29.7}
    assert poll_held_for(holds, "https://a.example/chat/rest/", 40) == 29.7 + HOLD_MARGIN_S
    assert poll_held_for(holds, "https://a.example/chat/rest/", 40, 1.0) == (
        29.7 + 1.0 + HOLD_MARGIN_S)  # sent up to 1 s after its kept time
    assert poll_held_for(holds, "https://b.example/chat/rest/", 40, 1.0) == 0.9 * 40
    # Nothing observed at this host (a chat moved by SwitchServer, or one that never idled).
    assert poll_held_for(holds, "https://b.example/chat/rest/", 40) == 0.9 * 40
    assert poll_held_for({}, "https://a.example/chat/rest/", 30) == 0.9 * 30
