#!/usr/bin/python3
"""A real SMTP server on 127.0.0.1 that keeps every message it receives.

    /usr/bin/python3 scripts/lib/mail-sink.py --dir DIR [--port P]

Port 0 or no --port lets the kernel choose. Once listening, the port is written
to DIR/port. Each message is stored as DIR/messages/<seq>-<uuid>.eml with two
headers prepended: X-Sink-Mail-From and X-Sink-Rcpt-To (the envelope; recipients
comma-separated). Files appear atomically (written elsewhere, then renamed).
Sequence numbers continue after the messages already in DIR, so a restarted
sink keeps the order. Logs go to stderr; message contents are never logged
(they may carry temporary passwords). SIGTERM or SIGINT stops it cleanly.

Needs Debian's python3-aiosmtpd (run it with /usr/bin/python3).
"""

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
import uuid

from aiosmtpd.smtp import SMTP

log = logging.getLogger("mail-sink")


class SinkHandler:
    def __init__(self, directory):
        self.messages = os.path.join(directory, "messages")
        self.tmp = os.path.join(directory, "tmp")
        os.makedirs(self.messages, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        seqs = [int(m.group(1)) for m in map(re.compile(r"^(\d+)-").match, os.listdir(self.messages)) if m]
        self.next_seq = max(seqs, default=0) + 1

    async def handle_DATA(self, server, session, envelope):
        seq = self.next_seq
        self.next_seq += 1
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        eol = b"\r\n" if b"\r\n" in content else b"\n"
        mail_from = envelope.mail_from or ""
        if mail_from == "<>":  # null reverse-path (bounces)
            mail_from = ""
        rcpt_to = ", ".join(envelope.rcpt_tos)
        head = b"X-Sink-Mail-From: " + mail_from.encode() + eol + b"X-Sink-Rcpt-To: " + rcpt_to.encode() + eol
        name = "%06d-%s.eml" % (seq, uuid.uuid4())
        tmp_path = os.path.join(self.tmp, name)
        with open(tmp_path, "wb") as f:
            f.write(head + content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp_path, os.path.join(self.messages, name))
        log.info("stored message %d from <%s> to %d recipient(s) (%d bytes)", seq, mail_from,
                 len(envelope.rcpt_tos), len(content))
        return "250 Message accepted for delivery"


async def serve(directory, port):
    handler = SinkHandler(directory)
    loop = asyncio.get_running_loop()

    def factory():
        return SMTP(handler, hostname="mail-sink.localhost", decode_data=False, enable_SMTPUTF8=True)

    server = await loop.create_server(factory, host="127.0.0.1", port=port)
    chosen = server.sockets[0].getsockname()[1]
    port_tmp = os.path.join(directory, "port.tmp")
    with open(port_tmp, "w") as f:
        f.write("%d\n" % chosen)
    os.rename(port_tmp, os.path.join(directory, "port"))
    log.info("listening on 127.0.0.1:%d, storing into %s", chosen, handler.messages)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    server.close()
    await server.wait_closed()


def main():
    parser = argparse.ArgumentParser(description="SMTP sink that stores every message")
    parser.add_argument("--dir", required=True, help="folder for the port file and the messages")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: kernel-chosen)")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    # aiosmtpd logs every SMTP command at INFO (an AUTH line would carry credentials).
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    os.makedirs(args.dir, exist_ok=True)
    asyncio.run(serve(os.path.abspath(args.dir), args.port))


if __name__ == "__main__":
    main()
