"""A real SMTP server on loopback for the email channel's tests (aiosmtpd).

Usage: python sink.py OUT_DIR [--reject ADDRESS]... [--defer ADDRESS]...

Listens on 127.0.0.1 on a free port and prints that port on its first line. Each accepted
message is written to OUT_DIR as N.eml (the data exactly as received) and N.json: the
envelope (mail_from, rcpt_tos), the queue id given in the reply, and the message as Python's
own email parser reads it (headers decoded, and each leaf part's type and decoded content), so
the test checks the MIME structure with a parser that is not the one that wrote it. RCPT TO a --reject
address is answered 550, a --defer address 451. Exits when its standard input closes, so it
never outlives the test that started it.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import sys
import threading

try:
    from aiosmtpd.smtp import SMTP
except ImportError:
    sys.stderr.write("aiosmtpd is not installed in this Python\n")
    sys.exit(3)


class Sink:
    def __init__(self, out, reject, defer):
        self.out = out
        self.reject = {a.lower() for a in reject}
        self.defer = {a.lower() for a in defer}
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.lower() in self.defer:
            return f"451 4.7.1 <{address}>: Recipient address rejected: try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        queue_id = f"4Q{self.count:06d}"
        base = os.path.join(self.out, str(self.count))
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        message = email.message_from_bytes(
            envelope.original_content, policy=email.policy.default
        )
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "queue_id": queue_id,
            "content_type": message.get_content_type(),
            "headers": {name.lower(): str(value) for name, value in message.items()},
            "parts": [
                {"type": part.get_content_type(), "content": part.get_content()}
                for part in message.walk()
                if not part.is_multipart()
            ],
        }
        # The envelope is written last: the test reads a message once its .json exists.
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return f"250 2.0.0 Ok: queued as {queue_id}"


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--reject", action="append", default=[])
    parser.add_argument("--defer", action="append", default=[])
    args = parser.parse_args()
    sink = Sink(args.out, args.reject, args.defer)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.test", decode_data=False), "127.0.0.1", 0
    )
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
