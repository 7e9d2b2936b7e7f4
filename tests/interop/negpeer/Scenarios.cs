// Scenarios of .NET's own NegotiateStream functional tests
// (System.Net.Security/tests/FunctionalTests/NegotiateStream*Test*.cs in
// dotnet/runtime), run by negpeer on an authenticated stream whose other
// end is libnegstream (nns_peer, given the matching --writes/--recv/--delay
// options by tests/interop/dotnet10.krb).  Written from the tests'
// descriptions (tests/DOTNET-CONFORMANCE.md); each records what it saw as
// key=value pairs and fails the case
// (Result.Fail) when .NET's own assertion would fail.
//
// Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Principal;
using System.Threading;
using System.Threading.Tasks;

static class Scenarios
{
    public static void Run(NegotiateStream ns, Socket sock, CaseOptions o,
                           Result r, bool server)
    {
        switch (o.Scenario) {
        case "successive": Successive(ns, o, r); break;
        case "longmsg": LongMessage(ns, o, r); break;
        case "smallmsgs": SmallMessages(ns, o, r); break;
        case "bytes": Bytes(ns, o, r); break;
        case "offsets": Offsets(ns, o, r); break;
        case "zeroread": ZeroRead(ns, o, r); break;
        case "eof": Eof(ns, o, r); break;
        case "concurrent-read": ConcurrentRead(ns, o, r); break;
        case "concurrent-write": ConcurrentWrite(ns, o, r); break;
        case "dispose-read": DisposeDuringRead(ns, o, r); break;
        case "badargs": BadArguments(ns, o, r); break;
        case "double-auth": DoubleAuthentication(ns, o, r, server); break;
        default:
            throw new ArgumentException("unknown scenario " + o.Scenario);
        }
    }

    static void Expect(Result r, string what, object got, object want)
    {
        if (!Equals(got, want))
            r.Fail(what + ": got " + got + ", want " + want);
    }

    static void ExpectPattern(Result r, string what, byte[] b, int off,
                              int n)
    {
        for (int i = 0; i < n; i++) {
            if (b[off + i] != (byte)(i % 251)) {
                r.Fail(what + ": byte " + i + " is " + b[off + i]);
                return;
            }
        }
    }

    static int ReadFully(NegotiateStream ns, CaseOptions o, byte[] b,
                         int off, int n, List<int> sizes)
    {
        int got = 0;
        while (got < n) {
            int k = Io.Read(ns, o.Io, b, off + got, n - got);
            if (k == 0)
                break;
            sizes?.Add(k);
            got += k;
        }
        return got;
    }

    // Successive_ClientWrite_Success: the peer writes the 19-byte message
    // twice; the first is read whole, the second as 5 bytes + the rest.
    static void Successive(NegotiateStream ns, CaseOptions o, Result r)
    {
        const int len = 19, part = 5;
        var b = new byte[len];
        int n1 = ReadFully(ns, o, b, 0, len, null);
        ExpectPattern(r, "first message", b, 0, len);
        int n2 = Io.Read(ns, o.Io, b, 0, part);
        int n3 = ReadFully(ns, o, b, part, len - part, null);
        r.Put("reads", n1 + "," + n2 + "," + n3);
        Expect(r, "first read", n1, len);
        Expect(r, "partial read", n2, part);
        Expect(r, "rest", n3, len - part);
        ExpectPattern(r, "second message", b, 0, len);
    }

    // ReadWriteLongMsg_Success: one 64513-byte write by the peer, read
    // with a buffer of the message's size until all has come.
    static void LongMessage(NegotiateStream ns, CaseOptions o, Result r)
    {
        const int len = 63 * 1024 + 1;
        var b = new byte[len];
        var sizes = new List<int>();
        int got = ReadFully(ns, o, b, 0, len, sizes);
        r.Put("reads", string.Join(",", sizes));
        Expect(r, "bytes", got, len);
        ExpectPattern(r, "long message", b, 0, len);
    }

    // ReadWrite_MessagesSmallerThanReadBuffer_Success: five 512-byte
    // writes by the peer, each read into a 1024-byte buffer.
    static void SmallMessages(NegotiateStream ns, CaseOptions o, Result r)
    {
        var b = new byte[1024];
        var sizes = new List<int>();
        for (int k = 0; k < 5; k++) {
            int got = 0;
            while (got < 512) {
                int n = Io.Read(ns, o.Io, b, got, 1024 - got);
                if (n == 0)
                    break;
                sizes.Add(n);
                got += n;
            }
            Expect(r, "message " + k, got, 512);
            ExpectPattern(r, "message " + k, b, 0, 512);
        }
        r.Put("reads", string.Join(",", sizes));
    }

    // ReadWriteByte_Success: the peer's 42 one-byte writes read with
    // ReadByte, then 42 WriteByte calls (values 0..41) to the peer.
    static void Bytes(NegotiateStream ns, CaseOptions o, Result r)
    {
        ulong rh = Fnv.Offset, wh = Fnv.Offset;
        var one = new byte[1];
        for (int k = 0; k < 42; k++) {
            int v = ns.ReadByte();
            if (v < 0) {
                r.Fail("ReadByte: end of stream after " + k + " bytes");
                break;
            }
            one[0] = (byte)v;
            rh = Fnv.Add(rh, one, 0, 1);
        }
        for (int k = 0; k < 42; k++) {
            ns.WriteByte((byte)k);
            one[0] = (byte)k;
            wh = Fnv.Add(wh, one, 0, 1);
        }
        r.Put("recv_hash", rh.ToString("x16"));
        r.Put("hash", wh.ToString("x16"));
    }

    // Read_DataStoredAtDesiredOffset / Write_DataReadFromDesiredOffset:
    // 1000 bytes written from offset 3 of a larger buffer, and 1000 bytes
    // read into offset 5; the bytes around are untouched.
    static void Offsets(NegotiateStream ns, CaseOptions o, Result r)
    {
        const int len = 1000;
        var w = new byte[len + 6];
        for (int i = 0; i < w.Length; i++)
            w[i] = 0xEE;
        Array.Copy(Io.Pattern(len), 0, w, 3, len);
        Io.Write(ns, o.Io, w, 3, len);
        r.Put("hash", Fnv.Add(Fnv.Offset, w, 3, len).ToString("x16"));
        var b = new byte[len + 10];
        for (int i = 0; i < b.Length; i++)
            b[i] = 0xEE;
        int got = ReadFully(ns, o, b, 5, len, null);
        Expect(r, "bytes read", got, len);
        ExpectPattern(r, "data at offset 5", b, 5, len);
        for (int i = 0; i < 5; i++)
            Expect(r, "guard byte " + i, b[i], (byte)0xEE);
        for (int i = 5 + len; i < b.Length; i++)
            Expect(r, "guard byte " + i, b[i], (byte)0xEE);
        r.Put("recv_hash", Fnv.Add(Fnv.Offset, b, 5, got).ToString("x16"));
    }

    // ZeroByteRead_BlocksUntilDataAvailableOrNops: the peer writes 5 bytes
    // after a delay; a 0-byte read returns 0 (blocking until the frame
    // has come, when framed); then the 5 bytes are all readable.
    static void ZeroRead(NegotiateStream ns, CaseOptions o, Result r)
    {
        var b = new byte[5];
        var sw = Stopwatch.StartNew();
        int z = Io.Read(ns, o.Io, b, 0, 0);
        r.Put("zero_read", z);
        r.Put("zero_read_ms", (long)sw.Elapsed.TotalMilliseconds);
        Expect(r, "0-byte read", z, 0);
        int got = ReadFully(ns, o, b, 0, 5, null);
        Expect(r, "bytes after it", got, 5);
        ExpectPattern(r, "data", b, 0, 5);
    }

    // Read_Eof_Returns0: the peer writes 5 bytes and closes; after them
    // every read returns 0.
    static void Eof(NegotiateStream ns, CaseOptions o, Result r)
    {
        var b = new byte[16];
        int got = ReadFully(ns, o, b, 0, 5, null);
        Expect(r, "bytes before EOF", got, 5);
        var zeros = new List<int>();
        for (int k = 0; k < 3; k++)
            zeros.Add(Io.Read(ns, o.Io, b, 0, b.Length));
        r.Put("eof_reads", string.Join(",", zeros));
        Expect(r, "reads at EOF", string.Join(",", zeros), "0,0,0");
    }

    static string Outcome(Func<Task> op)
    {
        try {
            op().GetAwaiter().GetResult();
            return "ok";
        } catch (Exception e) {
            return e.GetType().Name;
        }
    }

    // ReadAsync_DuringReadAsync_ThrowsIfUnsupported: a second ReadAsync
    // while one is pending (the peer writes only after a delay) fails with
    // NotSupportedException; the first still completes with the data.
    static void ConcurrentRead(NegotiateStream ns, CaseOptions o, Result r)
    {
        var b = new byte[5];
        Task<int> first = ns.ReadAsync(b, 0, b.Length);
        string second = Outcome(() => ns.ReadAsync(new byte[5], 0, 5));
        r.Put("first_pending", !first.IsCompleted);
        r.Put("second_read", second);
        int n = first.GetAwaiter().GetResult();
        r.Put("first_read", n);
        Expect(r, "second read", second, "NotSupportedException");
        Expect(r, "first read", n, 5);
        ExpectPattern(r, "data", b, 0, n);
    }

    // The same for writes: the peer reads only after a delay, so a 16 MiB
    // WriteAsync stays pending on the full socket (a few MiB of socket
    // buffers) once it has encrypted that much; a second write fails with
    // NotSupportedException and the first completes.  The peer's delay
    // (5 s in the scripts) must outlast that encryption, even on a loaded
    // machine: a first write already complete is reported as such.
    static void ConcurrentWrite(NegotiateStream ns, CaseOptions o, Result r)
    {
        const int len = 16 * 1024 * 1024;
        byte[] big = Io.Pattern(len);
        Task first = ns.WriteAsync(big, 0, len);
        string second = Outcome(() => ns.WriteAsync(new byte[5], 0, 5));
        bool pending = !first.IsCompleted;
        r.Put("first_pending", pending);
        r.Put("second_write", second);
        if (!pending)
            r.Fail("the first write was complete before the second was " +
                   "made: the peer read too early (its --delay-ms)");
        first.GetAwaiter().GetResult();
        r.Put("sent", len);
        r.Put("hash", Fnv.Add(Fnv.Offset, big, 0, len).ToString("x16"));
        Expect(r, "second write", second, "NotSupportedException");
    }

    // Disposal during an operation: a ReadAsync pending (the peer sends
    // nothing) when the stream is disposed; the read ends with an
    // exception, and the peer sees the end of the stream.
    static void DisposeDuringRead(NegotiateStream ns, CaseOptions o,
                                  Result r)
    {
        var b = new byte[16];
        Task<int> t = ns.ReadAsync(b, 0, b.Length);
        Thread.Sleep(200);
        r.Put("pending_before_dispose", !t.IsCompleted);
        ns.Dispose();
        string outcome;
        try {
            outcome = "returned_" + t.GetAwaiter().GetResult();
        } catch (Exception e) {
            outcome = e.GetType().Name;
        }
        r.Put("pending_read", outcome);
        r.Put("authenticated_after", ns.IsAuthenticated);
        if (outcome.StartsWith("returned_") && outcome != "returned_0")
            r.Fail("a read pending at Dispose delivered data");
    }

    static string Throws(Action a)
    {
        try {
            a();
            return "none";
        } catch (Exception e) {
            return e.GetType().Name;
        }
    }

    // InvalidParametersForReadWrite_Throws, ArgumentValidation and
    // EndRead/EndWrite with a null result, on a stream authenticated with
    // libnegstream: each call throws at once, and the stream still works
    // (19 bytes then go to the peer).
    static void BadArguments(NegotiateStream ns, CaseOptions o, Result r)
    {
        var b = new byte[4];
        var want = new (string, Action, string)[] {
            ("write_null", () => ns.Write(null, 0, 0),
             "ArgumentNullException"),
            ("write_off", () => ns.Write(b, -1, 1),
             "ArgumentOutOfRangeException"),
            ("write_count", () => ns.Write(b, 0, -1),
             "ArgumentOutOfRangeException"),
            ("write_big", () => ns.Write(b, 1, 4), "ArgumentException"),
            ("read_null", () => ns.Read(null, 0, 1),
             "ArgumentNullException"),
            ("read_off", () => ns.Read(b, 5, 0),
             "ArgumentOutOfRangeException"),
            ("read_big", () => ns.Read(b, 0, 5), "ArgumentException"),
            ("endread_null", () => ns.EndRead(null),
             "ArgumentNullException"),
            ("endwrite_null", () => ns.EndWrite(null),
             "ArgumentNullException"),
        };
        int ok = 0;
        foreach (var (name, act, exc) in want) {
            string got = Throws(act);
            // .NET throws ArgumentOutOfRangeException (a subclass) for
            // some "count too big" cases and ArgumentException for others
            bool match = got == exc || (exc == "ArgumentException" &&
                got == "ArgumentOutOfRangeException");
            if (match)
                ok++;
            else
                r.Fail(name + ": got " + got + ", want " + exc);
        }
        r.Put("bad_calls_refused", ok + "/" + want.Length);
        byte[] msg = Io.Pattern(19);
        Io.Write(ns, o.Io, msg, 0, msg.Length);
        r.Put("sent", msg.Length);
        r.Put("hash", Fnv.Add(Fnv.Offset, msg, 0, msg.Length)
                         .ToString("x16"));
    }

    // DoubleAuthentication_Throws: a second authentication of a stream
    // authenticated with libnegstream throws InvalidOperationException
    // and sends nothing; the stream still works.
    static void DoubleAuthentication(NegotiateStream ns, CaseOptions o,
                                     Result r, bool server)
    {
        string got = Throws(() => {
            if (server)
                ns.AuthenticateAsServer();
            else
                ns.AuthenticateAsClient(CredentialCache
                    .DefaultNetworkCredentials, o.Target);
        });
        r.Put("second_auth", got);
        Expect(r, "second authentication", got, "InvalidOperationException");
        byte[] msg = Io.Pattern(19);
        Io.Write(ns, o.Io, msg, 0, msg.Length);
        r.Put("sent", msg.Length);
        r.Put("hash", Fnv.Add(Fnv.Offset, msg, 0, msg.Length)
                         .ToString("x16"));
    }
}
