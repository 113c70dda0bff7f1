"""A local OpenAI-compatible chat server that misbehaves on purpose: 429s, 500s, slow and good replies.

Each distinct prompt goes through the scripted failures in turn before it gets a good answer, so a
client that retries correctly ends with every answer, and one that does not is caught. A request for
log-probabilities (``logprobs=True``) gets a one-token answer with the first token's top log-probabilities
in OpenAI's shape (:func:`scripted_logprobs`), an answer without them, or a 400, by the ``logprobs`` mode.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAILURES = ("429", "500", "slow")
LOGPROB_MODES = ("offered", "absent", "refused")
MAX_TOP_LOGPROBS = 20  # OpenAI's limit, and vLLM's default max_logprobs


class FakeOpenAI:
    def __init__(self, failures=FAILURES, slow_seconds: float = 1.5, delay: float = 0.0, logprobs: str = "offered") -> None:
        assert logprobs in LOGPROB_MODES, logprobs
        self.failures = list(failures)
        self.logprobs = logprobs  # what a request for log-probabilities gets: offered, absent (ignored) or refused (400)
        self.bodies: list[dict] = []  # every request, as sent
        self.slow_seconds = slow_seconds
        self.delay = delay  # added to every good reply: lets a test kill a client mid-run
        self.attempts: Counter[str] = Counter()
        self.events: list[str] = []
        self.auth_headers: set[str] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.auth_headers.add(self.headers.get("Authorization", ""))
                server.bodies.append(body)
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    attempt = server.attempts[prompt]
                    server.attempts[prompt] += 1
                mode = server.failures[attempt] if attempt < len(server.failures) else "good"
                server.events.append(mode)
                if mode == "429":
                    return self._reply(429, {"error": {"message": "rate limited", "type": "rate_limit"}})
                if mode == "500":
                    return self._reply(500, {"error": {"message": "boom", "type": "server_error"}})
                if mode == "slow":
                    time.sleep(server.slow_seconds)
                time.sleep(server.delay)
                if body.get("logprobs"):
                    return self._logprob_reply(prompt, body.get("top_logprobs") or 0)
                return self._reply(200, completion(good_answer(prompt)))

            def _logprob_reply(self, prompt: str, top_k: int) -> None:
                if server.logprobs == "refused" or top_k > MAX_TOP_LOGPROBS:
                    return self._reply(400, {"error": {"message": "logprobs are not supported by this model",
                                                       "type": "invalid_request_error", "param": "logprobs", "code": None}})
                return self._reply(200, logprob_completion(scripted_logprobs(prompt), top_k, server.logprobs == "offered"))

            def _reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def good_answer(prompt: str) -> str:
    """A biography that starts with the requested prefix and is unique per prompt."""
    prefix = re.search(r'Begin your answer with: "(.*)"', prompt)
    start = prefix[1] if prefix else "Sam Lee is a professional."
    tag = abs(hash(prompt)) % 10**8
    return f"{start} works on project {tag} with great care. Colleagues value the steady and thoughtful work."


def completion(text: str) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 10 + len(text.split())},
    }


def scripted_logprobs(prompt: str) -> list[tuple[str, float]]:
    """The first answer token's top log-probabilities for a stereotype prompt, best first.

    Agree with statements about women, disagree with those about men, and where the statement says
    "should", "No" is not among the tokens at all (the client must bound it) and "yes" wins. Spellings
    vary (" yes", "YES", "NO") as real tokenizers' do.
    """
    statement = re.search(r'"(.*)"', prompt)[1].lower()
    if "should" in statement:
        return [("Maybe", -0.4), (" yes", -1.9), ("I", -2.6)]
    if statement.startswith("women"):
        return [("Yes", -0.3), (" no", -1.6), ("No", -2.1), ("YES", -2.5), ("I", -4.0)]
    return [(" No", -0.2), ("Yes", -2.0), ("yes", -2.2), ("NO", -3.0)]


def logprob_completion(top: list[tuple[str, float]], top_k: int, offered: bool) -> dict:
    """A one-token chat completion choosing the best token, with its top ``top_k`` log-probabilities (or null)."""
    token, logprob = top[0]
    reply = completion(token.strip())
    content = [{**_token(token, logprob), "top_logprobs": [_token(t, lp) for t, lp in top[:top_k]]}]
    reply["choices"][0]["logprobs"] = {"content": content} if offered else None
    return reply


def _token(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}
