#!/usr/bin/python3
"""nns_acceptor.py: a minimal, independent [MS-NNS] acceptor (server side).

Written straight from the wire format, as negstream(7) describes it (WIRE
FORMAT: "Handshake messages" and "Data"; CONCEPTS: "Protection levels"), on
Debian's python3-gssapi, so that libnegstream and .NET can each be checked
against a third implementation.  Run it with /usr/bin/python3: the gssapi
module is Debian's.

One connection, then exit.  Prints "port=N" on the first stdout line once it
listens, and one line of key=value results at the end; exit 0 on success,
1 on any failure (the result line then ends with error=<text>).

Data bytes it sends are pattern bytes (offset % 251, from 0), and all data
is hashed with FNV-1a 64, as NegClient.cs does.
"""

import argparse
import socket
import struct
import sys
import threading
import time

import gssapi
from gssapi.raw import GSSError

# Handshake messages: ids and version.
MSG_DONE, MSG_ERROR, MSG_IN_PROGRESS = 0x14, 0x15, 0x16
MAJOR, MINOR = 1, 0
# Handshake messages: the error codes (Windows status values) we send.
ERROR_TRUST_FAILURE = 1790            # required level not met
SEC_E_LOGON_DENIED = 0x8009030C
SEC_E_INTERNAL_ERROR = 0x80090304
# Data: plaintext chunk size and accepted frame lengths.
MAX_CHUNK = 64512
MIN_FRAME, MAX_FRAME = 5, 65536

LEVELS = ("None", "Sign", "EncryptAndSign")
NTLM_OID = "1.3.6.1.4.1.311.2.2.10"
F = gssapi.RequirementFlag


class Failure(Exception):
    pass


def fnv1a64(chunks):
    h = 0xcbf29ce484222325
    for chunk in chunks:
        for b in chunk:
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def gss_status(e):
    """The failing security status goes to the peer; a bad or missing
    credential becomes 'logon denied' (.NET maps it to
    InvalidCredentialException), anything else a generic internal error."""
    routine = (e.maj_code >> 16) & 0xFF
    # GSS_S_NO_CRED 7, GSS_S_DEFECTIVE_CREDENTIAL 10, GSS_S_CREDENTIALS_EXPIRED 11
    return SEC_E_LOGON_DENIED if routine in (7, 10, 11) else SEC_E_INTERNAL_ERROR


def pattern(n):
    return bytes(i % 251 for i in range(n))


def recv_exact(sock, n, what):
    """n bytes, or b'' on EOF before the first byte; EOF later is an error."""
    buf = bytearray()
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            if not buf:
                return b""
            raise Failure("EOF inside %s (%d of %d bytes)" % (what, len(buf), n))
        buf += got
    return bytes(buf)


class Acceptor:
    def __init__(self, sock, args):
        self.sock = sock
        self.args = args
        self.ctx = None
        self.gss_lock = threading.Lock()   # one wrap and one unwrap thread
        self.result = {}
        self.hs_log = []                   # handshake messages in order

    # ---- handshake messages -------------------------------------------------
    def send_msg(self, msg_id, payload):
        self.hs_log.append("S%02x:%d" % (msg_id, len(payload)))
        self.sock.sendall(struct.pack(">BBBH", msg_id, MAJOR, MINOR,
                                      len(payload)) + payload)

    def send_error(self, code):
        # An 8-byte code, big-endian as .NET Core 2.0 sends it
        # (little-endian only on request, to see what a .NET peer makes of
        # it).
        order = "<q" if self.args.error_le else ">q"
        self.send_msg(MSG_ERROR, struct.pack(order, code))

    def achieved_level(self):
        # EncryptAndSign if confidentiality granted, else Sign if integrity
        # granted, else None.
        flags = self.ctx.actual_flags
        if F.confidentiality in flags:
            return "EncryptAndSign"
        if F.integrity in flags:
            return "Sign"
        return "None"

    def handshake(self):
        self.ctx = gssapi.SecurityContext(usage="accept")
        while True:
            hdr = recv_exact(self.sock, 5, "handshake header")
            if not hdr:
                raise Failure("connection closed during authentication")
            msg_id, major, minor, size = struct.unpack(">BBBH", hdr)
            if "first_hdr" not in self.result:
                self.result["first_hdr"] = hdr.hex()
            payload = recv_exact(self.sock, size, "handshake payload")
            if size and not payload:
                raise Failure("connection closed during authentication")
            if "first_tok" not in self.result:
                self.result["first_tok"] = payload[:16].hex()
            self.hs_log.append("C%02x:%d" % (msg_id, size))
            if msg_id == MSG_ERROR:
                # An 8-byte code; accept either byte order.
                if len(payload) < 8:
                    raise Failure("peer sent error message, short payload %s"
                                  % payload.hex())
                be, = struct.unpack(">q", payload[:8])
                le, = struct.unpack("<q", payload[:8])
                raise Failure("peer sent error message %s (BE %d, LE %d)"
                              % (payload.hex(), be, le))
            if msg_id not in (MSG_DONE, MSG_IN_PROGRESS):
                raise Failure("unknown handshake message id 0x%02x" % msg_id)
            if (major, minor) != (MAJOR, MINOR):
                raise Failure("wrong version %d.%d" % (major, minor))
            try:
                out = self.ctx.step(payload) or b""
            except GSSError as e:
                self.send_error(gss_status(e))
                raise Failure("gss_accept_sec_context: %s" % e)
            if not self.ctx.complete:
                if msg_id == MSG_DONE:
                    raise Failure("done message left the context incomplete")
                self.send_msg(MSG_IN_PROGRESS, out)
                continue
            # The outcome check, then the server ALWAYS sends done.
            level = self.achieved_level()
            need = self.args.protection_required
            if LEVELS.index(level) < LEVELS.index(need):
                self.send_error(ERROR_TRUST_FAILURE)
                raise Failure("achieved %s < required %s" % (level, need))
            if self.args.fail_with is not None:
                self.send_error(self.args.fail_with)   # test hook
                raise Failure("sent error %d instead of done"
                              % self.args.fail_with)
            self.send_msg(MSG_DONE, out)
            return

    # ---- data ---------------------------------------------------------------
    def framed(self):
        return bool({F.integrity, F.confidentiality}
                    & set(self.ctx.actual_flags))

    def ntlm_sign(self):
        # As .NET: NTLM without confidentiality sends a 16-byte MIC +
        # plaintext instead of a wrap token.
        return (self.ctx.mech.dotted_form == NTLM_OID
                and F.confidentiality not in self.ctx.actual_flags)

    def protect(self, data):
        with self.gss_lock:
            if self.ntlm_sign():
                return self.ctx.get_signature(data) + data
            conf = F.confidentiality in self.ctx.actual_flags
            return self.ctx.wrap(data, conf).message

    def unprotect(self, token):
        with self.gss_lock:
            if self.ntlm_sign():
                if len(token) < 16:
                    raise Failure("NTLM sign frame shorter than 16 bytes")
                self.ctx.verify_signature(token[16:], token[:16])
                return token[16:]
            return self.ctx.unwrap(token).message

    def write(self, data):
        if not self.framed():
            self.sock.sendall(data)                 # None: raw bytes
            return
        for off in range(0, len(data), MAX_CHUNK):  # a 0-byte write: nothing
            tok = self.protect(data[off:off + MAX_CHUNK])
            self.sock.sendall(struct.pack("<I", len(tok)) + tok)

    def read(self):
        """One message's plaintext; b'' at a clean EOF."""
        if not self.framed():
            return self.sock.recv(1 << 20)
        while True:
            hdr = recv_exact(self.sock, 4, "frame length")
            if not hdr:
                return b""
            size, = struct.unpack("<I", hdr)
            if size < MIN_FRAME or size > MAX_FRAME:
                raise Failure("invalid frame size %d" % size)
            self.frames.append(size)
            body = recv_exact(self.sock, size, "frame")
            if not body:
                raise Failure("EOF inside a frame (after its length)")
            data = self.unprotect(body)
            if data:
                return data
            self.empty_frames += 1              # skip empty frames

    def sender(self, n):
        try:
            self.write(pattern(n))
            self.sent = n
        except Exception as e:                  # reported by run()
            self.send_failure = e

    def run(self):
        a = self.args
        self.handshake()
        flags = self.ctx.actual_flags
        r = self.result
        # gss-ntlmssp's display name ends in a NUL; .NET strips it too.
        r["peer"] = str(self.ctx.initiator_name).rstrip("\0")
        r["mech"] = self.ctx.mech.dotted_form
        r["flags"] = ",".join(sorted(f.name for f in flags)) or "none"
        r["level"] = self.achieved_level()
        r["encrypted"] = F.confidentiality in flags
        r["framed"] = self.framed()
        self.frames, self.empty_frames, self.sent = [], 0, 0
        self.send_failure = None
        t0 = time.monotonic()
        th = None
        if a.send:
            th = threading.Thread(target=self.sender, args=(a.send,))
            th.start()
        got, chunks = 0, []
        while a.expect_bytes is None or got < a.expect_bytes:
            data = self.read()
            if not data:
                break
            got += len(data)
            # Keep the data and hash it at the end: Python's per-byte loop
            # would otherwise throttle the peer we want to measure.
            chunks.append(data)
            if a.echo:
                self.write(data)
        elapsed = time.monotonic() - t0
        if th:
            th.join()
            if self.send_failure:
                raise self.send_failure
        r["bytes"] = got
        r["hash"] = "%016x" % fnv1a64(chunks)
        r["sent"] = self.sent
        if a.send:
            r["sent_hash"] = "%016x" % fnv1a64([pattern(a.send)])
        if self.frames:
            r["frames"] = len(self.frames)
            r["frame_lens"] = ",".join(map(str, self.frames[:3]))
            r["max_frame"] = max(self.frames)
        r["empty_frames"] = self.empty_frames
        r["elapsed"] = "%.3f" % elapsed
        if a.expect_bytes is not None and got != a.expect_bytes:
            raise Failure("expected %d bytes, got %d" % (a.expect_bytes, got))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--protection-required", choices=LEVELS, default="None")
    p.add_argument("--echo", action="store_true",
                   help="send every received message back")
    p.add_argument("--expect-bytes", type=int, metavar="N",
                   help="stop reading after N bytes (else read to EOF)")
    p.add_argument("--send", type=int, default=0, metavar="N",
                   help="send N pattern bytes (concurrently with reading)")
    p.add_argument("--fail-with", type=int, metavar="CODE",
                   help="test hook: send an error message with CODE "
                   "instead of done")
    p.add_argument("--error-le", action="store_true",
                   help="test hook: send error codes little-endian")
    p.add_argument("--timeout", type=float, default=120, metavar="SECONDS",
                   help="give up when the peer is silent this long "
                   "(default 120), so a failed peer never leaves us hanging")
    args = p.parse_args()

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(1)
    print("port=%d" % lsock.getsockname()[1], flush=True)
    lsock.settimeout(args.timeout)
    try:
        sock, _ = lsock.accept()
    except socket.timeout:
        print("error=no connection within %gs" % args.timeout, flush=True)
        return 1
    lsock.close()
    sock.settimeout(args.timeout)

    acc = Acceptor(sock, args)
    rc = 0
    try:
        acc.run()
    except (Failure, GSSError, OSError) as e:
        acc.result["error"] = "%s: %s" % (type(e).__name__, e)
        rc = 1
    finally:
        sock.close()
    acc.result["handshake"] = ",".join(acc.hs_log)
    err = acc.result.pop("error", None)
    line = " ".join("%s=%s" % (k, v) for k, v in acc.result.items())
    if err is not None:
        line += " error=" + " ".join(str(err).split())
    print(line, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
