"""The tests' OpenAI-compatible fake (``testkit.fakes``) in a process of its own.

``python -m bench.llm_server PORT LATENCY``
"""

from __future__ import annotations

import sys
import threading

from testkit.fakes import openai_server
from testkit.fakes.openai_server import FakeOpenAIServer

# The stdlib default listen backlog (5) drops SYNs under 100+ concurrent calls (1 s retransmits).
openai_server._HTTPServer.request_queue_size = 1024
# Keep-alive, as real providers serve: the tests' fake answers HTTP/1.0 (a TCP connection per call, so
# nothing is served after stop()), which made every system's client pay a connect per LLM call here.
openai_server._Handler.protocol_version = "HTTP/1.1"
# Headers and body are two writes: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms per answer.
openai_server._Handler.disable_nagle_algorithm = True


class _Forgetful(FakeOpenAIServer):
    """Keeps no request log, so memory stays flat over a long run."""

    def handle_chat(self, handler, raw):  # type: ignore[no-untyped-def]
        super().handle_chat(handler, raw)
        with self._lock:
            self.requests.clear()


def main() -> None:
    port, latency = int(sys.argv[1]), float(sys.argv[2])
    with _Forgetful(port=port, latency=latency) as server:
        print(f"fake OpenAI server on {server.base_url} with latency {latency:g}s", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
