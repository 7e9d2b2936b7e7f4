// negpeer: the modern .NET NegotiateStream peer of libnegstream's interop
// tests (tests/interop/dotnet10.krb) and of bench/dotnet.sh.  One process
// serves many cases, so that the runtime starts once per group of tests:
//
//   negpeer [GLOBAL] server      listens on 127.0.0.1 (a free port), prints
//                                "port=N"; then for every line read on
//                                stdin, accepts one connection and runs that
//                                line's case as the server
//   negpeer [GLOBAL] client      for every line "PORT CASE-OPTIONS" read on
//                                stdin, connects to 127.0.0.1:PORT and runs
//                                the case as the client
//   negpeer [GLOBAL] info        prints the runtime version and switches
//
// GLOBAL: --managed-ntlm  sets the System.Net.Security.UseManagedNtlm
//                         AppContext switch before any NegotiateStream is
//                         made (the managed NTLM/SPNEGO client of .NET 8+)
//
// Case options (words separated by spaces; values have no spaces):
//   --name NAME             printed first in the result line (case=NAME)
//   --level None|Sign|EncryptAndSign   required/requested protection
//   --target SPN            client: the target name (default host/localhost)
//   --user U --password P [--domain D]   client: a NetworkCredential (else
//                           CredentialCache.DefaultNetworkCredentials)
//   --empty-credential      client: NetworkCredential("", "", "")
//   --impersonation L       client: allowed level; server: required level
//                           (Identification, Impersonation, Delegation)
//   --service-names A,B     server: an ExtendedProtectionPolicy (Always,
//                           or --ep-policy) with these service names
//   --tls CERT,KEY          server: an SslStream first (PEM certificate and
//                           key), the NegotiateStream inside it
//   --tls-trust CERT        client: an SslStream first, to "localhost",
//                           accepting exactly the PEM certificate CERT
//   (with TLS, tls=PROTOCOL is printed, and cb=HEX, the application data
//   of the ChannelBinding the case uses: the client's from
//   TransportContext.GetChannelBinding(ChannelBindingKind.Endpoint))
//   --binding endpoint|none client: pass that ChannelBinding to
//                           AuthenticateAsClient (default none: null)
//   --ep-policy Never|WhenSupported|Always   server: an
//                           ExtendedProtectionPolicy with this enforcement
//                           (with --ep-binding or --service-names, else
//                           the constructor without either)
//   --ep-binding endpoint|cert   server: the policy's CustomChannelBinding:
//                           endpoint, the SslStream's (GetChannelBinding);
//                           cert, one made here from the server
//                           certificate ("tls-server-end-point:" + its
//                           SHA-256: for SHA-256 signed certificates)
//   --auth sync|apm|async   AuthenticateAs*, Begin/End, or *Async
//   --io sync|apm|async     Read/Write, Begin/End (the next call issued
//                           from the callback), or ReadAsync/WriteAsync
//   --writes LIST           one write per size, in order: "0,1,64512" or
//                           "512x5" (five writes of 512 bytes)
//   --stream N              then N bytes in writes of --chunk (256 KiB)
//   --recv N                read exactly N bytes (while the writes go on);
//                           --recv eof: read until end of stream
//   --read-buf N            read buffer size (default 131072)
//   --echo                  write every read straight back (with --recv)
//   --no-hash               skip the hashes (throughput runs)
//   --delay-ms N            sleep before the data phase
//   --drop-after-bytes N    test mode: write at most N bytes to the socket
//                           in all (handshake and data), then close it
//   --drop-data-after N     test mode: the same, counting from the end of
//                           the authentication
//   --close-before-read     test mode: close the socket instead of the
//                           first read of the handshake
//   --scenario NAME         instead of the plain data phase, one of .NET's
//                           own NegotiateStream test scenarios against the
//                           other side (see RunScenario)
//   --timeout S             the case is given up after S seconds (60): the
//                           socket is closed, so nothing can hang
//
// Data bytes are offset % 251, restarting at 0 for every write; everything
// sent and received is hashed with FNV-1a 64 (as NegClient.cs, nns_peer.c
// and nns_acceptor.py do).  Output: one result line per case,
// "case=NAME key=value ... error=Type: message --> Inner: message", error
// last; rc=0 when the case ran without exception, else rc=1.
//
// Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
using System;
using System.Collections.Generic;
using System.ComponentModel;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Authentication;
using System.Security.Authentication.ExtendedProtection;
using System.Security.Cryptography.X509Certificates;
using System.Security.Principal;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

static class Fnv
{
    public const ulong Offset = 14695981039346656037UL;
    const ulong Prime = 1099511628211UL;

    public static ulong Add(ulong h, byte[] b, int off, int n)
    {
        for (int i = off; i < off + n; i++) {
            h ^= b[i];
            h *= Prime;
        }
        return h;
    }
}

sealed class CaseOptions
{
    public string Name = "case";
    public ProtectionLevel Level = ProtectionLevel.EncryptAndSign;
    public string Target = "host/localhost";
    public string User, Password, Domain = "";
    public bool EmptyCredential, Echo, Hash = true, CloseBeforeRead;
    public TokenImpersonationLevel Impersonation =
        TokenImpersonationLevel.Identification;
    public string[] ServiceNames;
    public string TlsCert, TlsKey, TlsTrust, Binding = "none";
    public PolicyEnforcement? EpPolicy;
    public string EpBinding;
    public string Auth = "async", Io = "async", Scenario;
    public List<long> Writes = new List<long>();
    public long Stream, Recv = -2, DropAfter = -1;   // Recv -1: to EOF
    public long DropDataAfter = -1;
    public int Chunk = 256 * 1024, ReadBuf = 128 * 1024, DelayMs;
    public int Port, Timeout = 60;

    static string Val(string[] a, ref int i)
    {
        if (i + 1 >= a.Length)
            throw new ArgumentException(a[i] + " needs a value");
        return a[++i];
    }

    static long Num(string[] a, ref int i)
    {
        long n = long.Parse(Val(a, ref i));
        if (n < 0)
            throw new ArgumentException(a[i - 1] + ": negative");
        return n;
    }

    static string Mode(string[] a, ref int i)
    {
        string m = Val(a, ref i);
        if (m != "sync" && m != "apm" && m != "async")
            throw new ArgumentException(a[i - 1] + ": sync, apm or async");
        return m;
    }

    public static CaseOptions Parse(string line, bool client)
    {
        var o = new CaseOptions();
        string[] a = line.Split(new[] { ' ', '\t' },
                                StringSplitOptions.RemoveEmptyEntries);
        int i = 0;
        if (client) {
            if (a.Length == 0)
                throw new ArgumentException("client: PORT first");
            o.Port = int.Parse(a[0]);
            i = 1;
        }
        for (; i < a.Length; i++) {
            switch (a[i]) {
            case "--name": o.Name = Val(a, ref i); break;
            case "--level":
                o.Level = Enum.Parse<ProtectionLevel>(Val(a, ref i));
                break;
            case "--target": o.Target = Val(a, ref i); break;
            case "--user": o.User = Val(a, ref i); break;
            case "--password": o.Password = Val(a, ref i); break;
            case "--domain": o.Domain = Val(a, ref i); break;
            case "--empty-credential": o.EmptyCredential = true; break;
            case "--impersonation":
                o.Impersonation =
                    Enum.Parse<TokenImpersonationLevel>(Val(a, ref i));
                break;
            case "--service-names":
                o.ServiceNames = Val(a, ref i).Split(',');
                break;
            case "--tls": {
                string[] f = Val(a, ref i).Split(',');
                if (f.Length != 2)
                    throw new ArgumentException("--tls CERT,KEY");
                o.TlsCert = f[0];
                o.TlsKey = f[1];
                break;
            }
            case "--tls-trust": o.TlsTrust = Val(a, ref i); break;
            case "--binding":
                o.Binding = Val(a, ref i);
                if (o.Binding != "endpoint" && o.Binding != "none")
                    throw new ArgumentException("--binding endpoint|none");
                break;
            case "--ep-policy":
                o.EpPolicy = Enum.Parse<PolicyEnforcement>(Val(a, ref i));
                break;
            case "--ep-binding":
                o.EpBinding = Val(a, ref i);
                if (o.EpBinding != "endpoint" && o.EpBinding != "cert")
                    throw new ArgumentException("--ep-binding endpoint|cert");
                break;
            case "--auth": o.Auth = Mode(a, ref i); break;
            case "--io": o.Io = Mode(a, ref i); break;
            case "--writes":
                foreach (string w in Val(a, ref i).Split(',')) {
                    int x = w.IndexOf('x');
                    long n = long.Parse(x < 0 ? w : w.Substring(0, x));
                    int times = x < 0 ? 1 : int.Parse(w.Substring(x + 1));
                    for (int k = 0; k < times; k++)
                        o.Writes.Add(n);
                }
                break;
            case "--stream": o.Stream = Num(a, ref i); break;
            case "--chunk": o.Chunk = (int)Num(a, ref i); break;
            case "--recv":
                if (i + 1 < a.Length && a[i + 1] == "eof") {
                    o.Recv = -1;
                    i++;
                } else {
                    o.Recv = Num(a, ref i);
                }
                break;
            case "--read-buf": o.ReadBuf = (int)Num(a, ref i); break;
            case "--echo": o.Echo = true; break;
            case "--no-hash": o.Hash = false; break;
            case "--delay-ms": o.DelayMs = (int)Num(a, ref i); break;
            case "--drop-after-bytes": o.DropAfter = Num(a, ref i); break;
            case "--drop-data-after":
                o.DropDataAfter = Num(a, ref i);
                break;
            case "--close-before-read": o.CloseBeforeRead = true; break;
            case "--scenario": o.Scenario = Val(a, ref i); break;
            case "--timeout": o.Timeout = (int)Num(a, ref i); break;
            default:
                throw new ArgumentException("unknown option " + a[i]);
            }
        }
        if (o.Chunk <= 0 || o.ReadBuf <= 0)
            throw new ArgumentException("--chunk/--read-buf must be > 0");
        return o;
    }
}

// The result line: keys in the order first set, "error" last.
sealed class Result
{
    readonly List<string> keys = new List<string>();
    readonly Dictionary<string, string> vals =
        new Dictionary<string, string>();
    string error;

    public void Put(string k, object v)
    {
        string s = Convert.ToString(v) ?? "";
        s = s.Replace(' ', '_').Replace('\n', '_').Replace('\r', '_')
             .Replace('\t', '_');
        if (s.Length == 0)
            s = "-";
        lock (this) {
            if (!vals.ContainsKey(k))
                keys.Add(k);
            vals[k] = s;
        }
    }

    public bool Failed { get { lock (this) return error != null; } }

    // The first failure wins: later ones are usually its consequences.
    public void Fail(Exception e)
    {
        lock (this) {
            if (error == null)
                error = Describe(e);
        }
    }

    public void Fail(string msg)
    {
        lock (this) {
            if (error == null)
                error = "Check: " + msg;
        }
    }

    public static string Describe(Exception e)
    {
        if (e is AggregateException ag && ag.InnerExceptions.Count == 1)
            e = ag.InnerExceptions[0];
        var sb = new StringBuilder();
        sb.Append(e.GetType().Name).Append(": ").Append(e.Message);
        for (var inner = e.InnerException; inner != null;
             inner = inner.InnerException) {
            sb.Append(" --> ").Append(inner.GetType().Name).Append(": ")
              .Append(inner.Message);
            if (inner is Win32Exception w)
                sb.AppendFormat(" (NativeErrorCode=0x{0:X8})",
                                w.NativeErrorCode);
        }
        return sb.ToString().Replace('\n', ' ').Replace('\r', ' ');
    }

    public string Line()
    {
        var sb = new StringBuilder();
        lock (this) {
            foreach (string k in keys) {
                if (sb.Length > 0)
                    sb.Append(' ');
                sb.Append(k).Append('=').Append(vals[k]);
            }
            sb.Append(sb.Length > 0 ? " " : "")
              .Append("rc=").Append(error == null ? 0 : 1);
            if (error != null)
                sb.Append(" error=").Append(error);
        }
        return sb.ToString();
    }
}

// Test modes: a transport that dies part way.  Counts the bytes written
// through it and closes the socket once DropAfter bytes are out (writing
// only the part before the cut), or closes it at the first read.
sealed class FaultStream : Stream
{
    readonly Stream inner;
    readonly Socket sock;
    long left;
    bool closeOnRead;

    public FaultStream(Stream inner, Socket sock, long dropAfter,
                       bool closeOnRead)
    {
        this.inner = inner;
        this.sock = sock;
        left = dropAfter < 0 ? long.MaxValue : dropAfter;
        this.closeOnRead = closeOnRead;
    }

    // From now on, close after n more bytes.
    public void Arm(long n)
    {
        left = n;
    }

    void Cut()
    {
        try { sock.Shutdown(SocketShutdown.Both); } catch (Exception) { }
        sock.Close();
        throw new IOException("negpeer test mode: socket closed on purpose");
    }

    public override int Read(byte[] b, int off, int n) =>
        Read(b.AsSpan(off, n));

    public override int Read(Span<byte> b)
    {
        if (closeOnRead)
            Cut();
        return inner.Read(b);
    }

    public override Task<int> ReadAsync(byte[] b, int off, int n,
                                        CancellationToken ct) =>
        ReadAsync(b.AsMemory(off, n), ct).AsTask();

    public override ValueTask<int> ReadAsync(Memory<byte> b,
                                             CancellationToken ct = default)
    {
        if (closeOnRead)
            Cut();
        return inner.ReadAsync(b, ct);
    }

    public override void Write(byte[] b, int off, int n) =>
        Write(new ReadOnlySpan<byte>(b, off, n));

    public override void Write(ReadOnlySpan<byte> b)
    {
        int n = (int)Math.Min(b.Length, left);
        if (n > 0)
            inner.Write(b.Slice(0, n));
        left -= n;
        if (n < b.Length || left == 0)
            Cut();
    }

    public override Task WriteAsync(byte[] b, int off, int n,
                                    CancellationToken ct) =>
        WriteAsync(b.AsMemory(off, n), ct).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> b,
                                               CancellationToken ct = default)
    {
        int n = (int)Math.Min(b.Length, left);
        if (n > 0)
            await inner.WriteAsync(b.Slice(0, n), ct);
        left -= n;
        if (n < b.Length || left == 0)
            Cut();
    }

    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken ct) =>
        inner.FlushAsync(ct);
    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }
    public override long Seek(long o, SeekOrigin s) =>
        throw new NotSupportedException();
    public override void SetLength(long v) =>
        throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            inner.Dispose();
        base.Dispose(disposing);
    }
}

// A tls-server-end-point ChannelBinding made by hand from a certificate
// (SHA-256 of its DER, the hash RFC 5929 prescribes for SHA-256 signed
// certificates): a SEC_CHANNEL_BINDINGS header of 32 bytes, of which
// only the application data length and offset are set, then the data.
sealed class CertBinding : ChannelBinding
{
    readonly int size;

    public CertBinding(byte[] der) : base(true)
    {
        byte[] prefix = Encoding.ASCII.GetBytes("tls-server-end-point:");
        byte[] hash = System.Security.Cryptography.SHA256.HashData(der);
        var raw = new byte[32 + prefix.Length + hash.Length];
        BitConverter.TryWriteBytes(raw.AsSpan(24),
                                   prefix.Length + hash.Length);
        BitConverter.TryWriteBytes(raw.AsSpan(28), 32);
        prefix.CopyTo(raw, 32);
        hash.CopyTo(raw, 32 + prefix.Length);
        size = raw.Length;
        IntPtr p = Marshal.AllocHGlobal(size);
        Marshal.Copy(raw, 0, p, size);
        SetHandle(p);
    }

    public override int Size => size;

    protected override bool ReleaseHandle()
    {
        Marshal.FreeHGlobal(handle);
        return true;
    }
}

static class Io
{
    public static byte[] Pattern(long n)
    {
        var b = new byte[n];
        for (long i = 0; i < n; i++)
            b[i] = (byte)(i % 251);
        return b;
    }

    public static int Read(NegotiateStream ns, string mode, byte[] b,
                           int off, int n)
    {
        switch (mode) {
        case "sync":
            return ns.Read(b, off, n);
        case "apm": {
            var tcs = new TaskCompletionSource<int>(
                TaskCreationOptions.RunContinuationsAsynchronously);
            ns.BeginRead(b, off, n, ar => {
                try {
                    tcs.SetResult(ns.EndRead(ar));
                } catch (Exception e) {
                    tcs.SetException(e);
                }
            }, null);
            return tcs.Task.GetAwaiter().GetResult();
        }
        default:
            return ns.ReadAsync(b, off, n).GetAwaiter().GetResult();
        }
    }

    public static void Write(NegotiateStream ns, string mode, byte[] b,
                             int off, int n)
    {
        switch (mode) {
        case "sync":
            ns.Write(b, off, n);
            return;
        case "apm": {
            var tcs = new TaskCompletionSource<bool>(
                TaskCreationOptions.RunContinuationsAsynchronously);
            ns.BeginWrite(b, off, n, ar => {
                try {
                    ns.EndWrite(ar);
                    tcs.SetResult(true);
                } catch (Exception e) {
                    tcs.SetException(e);
                }
            }, null);
            tcs.Task.GetAwaiter().GetResult();
            return;
        }
        default:
            ns.WriteAsync(b, off, n).GetAwaiter().GetResult();
            return;
        }
    }

    // A chain of BeginWrite calls, each issued from the previous one's
    // callback (the pattern of bench/dotnet.sh's .NET figure); returns
    // when the last EndWrite is done.
    public static void ApmChain(NegotiateStream ns, byte[] chunk, long total,
                                Action<int> done)
    {
        var tcs = new TaskCompletionSource<bool>(
            TaskCreationOptions.RunContinuationsAsynchronously);
        long left = total;
        AsyncCallback cb = null;
        int cur = 0;
        Action next = () => {
            if (left == 0) {
                tcs.TrySetResult(true);
                return;
            }
            cur = (int)Math.Min(left, chunk.Length);
            left -= cur;
            ns.BeginWrite(chunk, 0, cur, cb, null);
        };
        cb = ar => {
            try {
                ns.EndWrite(ar);
                done(cur);
                next();
            } catch (Exception e) {
                tcs.TrySetException(e);
            }
        };
        try {
            next();
        } catch (Exception e) {
            tcs.TrySetException(e);
        }
        tcs.Task.GetAwaiter().GetResult();
    }
}

static class Program
{
    static bool ManagedNtlm;

    static int Main(string[] args)
    {
        int i = 0;
        for (; i < args.Length && args[i].StartsWith("--"); i++) {
            if (args[i] == "--managed-ntlm") {
                AppContext.SetSwitch("System.Net.Security.UseManagedNtlm",
                                     true);
                ManagedNtlm = true;
            } else {
                Console.Error.WriteLine("negpeer: unknown option " + args[i]);
                return 2;
            }
        }
        string role = i < args.Length ? args[i] : "";
        switch (role) {
        case "info":
            Console.WriteLine(
                "dotnet={0} os={1} managed_ntlm_switch={2} managed_ntlm={3}",
                Environment.Version,
                Environment.OSVersion.VersionString.Replace(' ', '_'),
                ManagedNtlmSwitchExists(), ManagedNtlm);
            return 0;
        case "server":
            return Serve();
        case "client":
            return Connect();
        default:
            Console.Error.WriteLine(
                "usage: negpeer [--managed-ntlm] server|client|info " +
                "(case lines on stdin; see Program.cs)");
            return 2;
        }
    }

    // Whether this runtime reads the switch at all: the internal property
    // NegotiateAuthenticationPal.UseManagedNtlm exists on Unix since .NET 8.
    static bool ManagedNtlmSwitchExists()
    {
        var t = typeof(NegotiateStream).Assembly.GetType(
            "System.Net.NegotiateAuthenticationPal");
        return t != null && t.GetProperty("UseManagedNtlm",
            System.Reflection.BindingFlags.Static |
            System.Reflection.BindingFlags.NonPublic) != null;
    }

    // A case line it cannot parse: a failed case (the script sees why),
    // and the next line is read as usual.
    static void BadLine(Exception e)
    {
        var r = new Result();
        r.Put("case", "?");
        r.Fail("bad case line: " + e.Message);
        Emit(r);
    }

    static void Emit(Result r)
    {
        Console.Out.WriteLine(r.Line());
        Console.Out.Flush();
    }

    static int Serve()
    {
        var ls = new Socket(AddressFamily.InterNetwork, SocketType.Stream,
                            ProtocolType.Tcp);
        ls.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        ls.Listen(16);
        Console.Out.WriteLine("port=" + ((IPEndPoint)ls.LocalEndPoint).Port);
        Console.Out.Flush();
        string line;
        while ((line = Console.In.ReadLine()) != null) {
            if (line.Trim().Length == 0)
                continue;
            CaseOptions o;
            try {
                o = CaseOptions.Parse(line, false);
            } catch (Exception e) {
                BadLine(e);
                continue;
            }
            Socket s;
            Task<Socket> at = ls.AcceptAsync();
            if (!at.Wait(o.Timeout * 1000)) {
                var r = new Result();
                r.Put("case", o.Name);
                r.Fail("no connection within " + o.Timeout + " s");
                Emit(r);
                ls.Close();   // the pending accept ends with it
                return 1;
            }
            s = at.Result;
            Emit(RunCase(s, o, true));
        }
        ls.Close();
        return 0;
    }

    static int Connect()
    {
        string line;
        while ((line = Console.In.ReadLine()) != null) {
            if (line.Trim().Length == 0)
                continue;
            CaseOptions o;
            try {
                o = CaseOptions.Parse(line, true);
            } catch (Exception e) {
                BadLine(e);
                continue;
            }
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream,
                               ProtocolType.Tcp);
            try {
                s.Connect(new IPEndPoint(IPAddress.Loopback, o.Port));
            } catch (Exception e) {
                var r = new Result();
                r.Put("case", o.Name);
                r.Fail(e);
                Emit(r);
                s.Dispose();
                continue;
            }
            Emit(RunCase(s, o, false));
        }
        return 0;
    }

    static NetworkCredential ClientCredential(CaseOptions o)
    {
        if (o.EmptyCredential)
            return new NetworkCredential("", "", "");
        if (o.User != null)
            return new NetworkCredential(o.User, o.Password ?? "",
                                         o.Domain);
        return CredentialCache.DefaultNetworkCredentials;
    }

    // The server's ExtendedProtectionPolicy, or null for none.
    static ExtendedProtectionPolicy Policy(CaseOptions o, ChannelBinding cb)
    {
        if (o.EpPolicy == null && o.ServiceNames == null &&
            o.EpBinding == null)
            return null;
        var enf = o.EpPolicy ?? PolicyEnforcement.Always;
        if (o.EpBinding != null)
            return new ExtendedProtectionPolicy(enf, cb);
        if (o.ServiceNames != null)
            return new ExtendedProtectionPolicy(enf,
                ProtectionScenario.TransportSelected,
                new ServiceNameCollection(o.ServiceNames));
        return new ExtendedProtectionPolicy(enf);
    }

    // cb: the channel's binding (TLS), or null.
    static void Authenticate(NegotiateStream ns, CaseOptions o, bool server,
                             ChannelBinding cb)
    {
        if (server) {
            var cred = CredentialCache.DefaultNetworkCredentials;
            ExtendedProtectionPolicy pol = Policy(o, cb);
            switch (o.Auth) {
            case "sync":
                if (pol != null)
                    ns.AuthenticateAsServer(cred, pol, o.Level,
                                            o.Impersonation);
                else
                    ns.AuthenticateAsServer(cred, o.Level, o.Impersonation);
                return;
            case "apm":
                WaitApm(acb => pol != null
                    ? ns.BeginAuthenticateAsServer(cred, pol, o.Level,
                          o.Impersonation, acb, null)
                    : ns.BeginAuthenticateAsServer(cred, o.Level,
                          o.Impersonation, acb, null),
                    ar => ns.EndAuthenticateAsServer(ar));
                return;
            default:
                (pol != null
                    ? ns.AuthenticateAsServerAsync(cred, pol, o.Level,
                                                   o.Impersonation)
                    : ns.AuthenticateAsServerAsync(cred, o.Level,
                                                   o.Impersonation))
                    .GetAwaiter().GetResult();
                return;
            }
        } else {
            var cred = ClientCredential(o);
            ChannelBinding bind = o.Binding == "endpoint" ? cb : null;
            if (o.Binding == "endpoint" && cb == null)
                throw new ArgumentException("--binding endpoint needs TLS");
            switch (o.Auth) {
            case "sync":
                ns.AuthenticateAsClient(cred, bind, o.Target, o.Level,
                                        o.Impersonation);
                return;
            case "apm":
                WaitApm(acb => ns.BeginAuthenticateAsClient(cred, bind,
                            o.Target, o.Level, o.Impersonation, acb, null),
                        ar => ns.EndAuthenticateAsClient(ar));
                return;
            default:
                ns.AuthenticateAsClientAsync(cred, bind, o.Target, o.Level,
                                             o.Impersonation)
                  .GetAwaiter().GetResult();
                return;
            }
        }
    }

    // Begin with a callback that calls End; waits for the callback.
    static void WaitApm(Func<AsyncCallback, IAsyncResult> begin,
                        Action<IAsyncResult> end)
    {
        var tcs = new TaskCompletionSource<bool>(
            TaskCreationOptions.RunContinuationsAsynchronously);
        begin(ar => {
            try {
                end(ar);
                tcs.SetResult(true);
            } catch (Exception e) {
                tcs.SetException(e);
            }
        });
        tcs.Task.GetAwaiter().GetResult();
    }

    static void Properties(NegotiateStream ns, Result r)
    {
        r.Put("encrypted", ns.IsEncrypted);
        r.Put("signed", ns.IsSigned);
        r.Put("mutual", ns.IsMutuallyAuthenticated);
        r.Put("impersonation", ns.ImpersonationLevel);
        IIdentity id = ns.RemoteIdentity;
        r.Put("remote_name", id.Name);
        r.Put("remote_type", id.AuthenticationType);
        r.Put("remote_auth", id.IsAuthenticated);
    }

    static Result RunCase(Socket sock, CaseOptions o, bool server)
    {
        var r = new Result();
        r.Put("case", o.Name);
        sock.NoDelay = true;
        Stream inner = new NetworkStream(sock, true);
        FaultStream fault = null;
        if (o.DropAfter >= 0 || o.CloseBeforeRead || o.DropDataAfter >= 0)
            inner = fault = new FaultStream(inner, sock, o.DropAfter,
                                            o.CloseBeforeRead);
        bool timedOut = false;
        ChannelBinding cb = null;
        NegotiateStream ns = null;
        // The watchdog: closing the socket ends every pending call.
        using var dog = new Timer(_ => {
            timedOut = true;
            try { sock.Close(); } catch (Exception) { }
        }, null, o.Timeout * 1000, Timeout.Infinite);
        var sw = Stopwatch.StartNew();
        try {
            if (o.TlsCert != null || o.TlsTrust != null) {
                var ssl = Tls(inner, o, server);
                inner = ssl;
                r.Put("tls", ssl.SslProtocol);
                // .NET 10 on Linux: a server's GetChannelBinding(Endpoint)
                // throws (it looks for a peer certificate); see FINDINGS
                if (!server || o.EpBinding == "endpoint")
                    cb = ssl.TransportContext.GetChannelBinding(
                        ChannelBindingKind.Endpoint);
                else if (o.EpBinding == "cert")
                    cb = new CertBinding(ssl.LocalCertificate
                                            .GetRawCertData());
                if (cb != null)
                    r.Put("cb", BindingHex(cb));
            }
            ns = new NegotiateStream(inner, false);
            try {
                Authenticate(ns, o, server, cb);
            } finally {
                r.Put("authenticated", ns.IsAuthenticated);
            }
            Properties(ns, r);
            if (o.DropDataAfter >= 0)
                fault.Arm(o.DropDataAfter);
            if (o.DelayMs > 0)
                Thread.Sleep(o.DelayMs);
            if (o.Scenario != null)
                Scenarios.Run(ns, sock, o, r, server);
            else
                DataPhase(ns, o, r);
        } catch (Exception e) {
            r.Fail(e);
        } finally {
            r.Put("elapsed", sw.Elapsed.TotalSeconds.ToString("F3"));
            try {
                if (ns != null)
                    ns.Dispose();
                else
                    inner.Dispose();
            } catch (Exception e) {
                r.Put("dispose_error", e.GetType().Name);
            }
            cb?.Dispose();
            sock.Dispose();
        }
        if (timedOut)
            r.Fail("timed out after " + o.Timeout + " s");
        return r;
    }

    // The TLS layer below the NegotiateStream: the server shows the PEM
    // certificate of --tls, the client accepts only that of --tls-trust.
    static SslStream Tls(Stream inner, CaseOptions o, bool server)
    {
        if (server) {
            var cert = X509Certificate2.CreateFromPemFile(o.TlsCert,
                                                          o.TlsKey);
            var ssl = new SslStream(inner, false);
            ssl.AuthenticateAsServer(new SslServerAuthenticationOptions {
                ServerCertificate = cert,
            });
            return ssl;
        } else {
            byte[] trusted = X509Certificate2.CreateFromPem(
                File.ReadAllText(o.TlsTrust)).RawData;
            var ssl = new SslStream(inner, false,
                (sender, c, chain, errors) => c != null &&
                    c.GetRawCertData().AsSpan().SequenceEqual(trusted));
            ssl.AuthenticateAsClient(new SslClientAuthenticationOptions {
                TargetHost = "localhost",
            });
            return ssl;
        }
    }

    // The application data of a ChannelBinding (after the 32-byte
    // SEC_CHANNEL_BINDINGS header, whose last two fields are its length
    // and offset), in hex.
    static string BindingHex(ChannelBinding cb)
    {
        if (cb == null || cb.IsInvalid)
            return "-";
        var raw = new byte[cb.Size];
        Marshal.Copy(cb.DangerousGetHandle(), raw, 0, cb.Size);
        int len = BitConverter.ToInt32(raw, 24);
        int off = BitConverter.ToInt32(raw, 28);
        return Convert.ToHexString(raw, off, len).ToLowerInvariant();
    }

    // Writes (main thread) and reads (own thread) at once, both hashed.
    static void DataPhase(NegotiateStream ns, CaseOptions o, Result r)
    {
        long got = 0;
        ulong rh = Fnv.Offset, wh = Fnv.Offset;
        long sent = 0;
        Exception readErr = null;
        Thread reader = null;
        var sw = Stopwatch.StartNew();
        double readDone = 0;

        if (o.Recv != -2) {
            reader = new Thread(() => {
                var buf = new byte[o.ReadBuf];
                try {
                    while (o.Recv < 0 || got < o.Recv) {
                        int want = o.Recv < 0 ? buf.Length
                            : (int)Math.Min(buf.Length, o.Recv - got);
                        int n = Io.Read(ns, o.Io, buf, 0, want);
                        if (n == 0)
                            break;
                        if (o.Hash)
                            rh = Fnv.Add(rh, buf, 0, n);
                        got += n;
                        if (o.Echo)
                            Io.Write(ns, o.Io, buf, 0, n);
                    }
                } catch (Exception e) {
                    readErr = e;
                }
                readDone = sw.Elapsed.TotalSeconds;
            });
            reader.Start();
        }
        try {
            foreach (long n in o.Writes) {
                byte[] b = Io.Pattern(n);
                Io.Write(ns, o.Io, b, 0, (int)n);
                if (o.Hash)
                    wh = Fnv.Add(wh, b, 0, (int)n);
                sent += n;
            }
            if (o.Stream > 0) {
                byte[] c = Io.Pattern(Math.Min(o.Stream, o.Chunk));
                if (o.Io == "apm") {
                    Io.ApmChain(ns, c, o.Stream, n => {
                        if (o.Hash)
                            wh = Fnv.Add(wh, c, 0, n);
                        sent += n;
                    });
                } else {
                    for (long left = o.Stream; left > 0;) {
                        int n = (int)Math.Min(left, c.Length);
                        Io.Write(ns, o.Io, c, 0, n);
                        if (o.Hash)
                            wh = Fnv.Add(wh, c, 0, n);
                        sent += n;
                        left -= n;
                    }
                }
            }
        } catch (Exception e) {
            r.Fail(e);
        }
        double writeDone = sw.Elapsed.TotalSeconds;
        reader?.Join();
        if (readErr != null)
            r.Fail(readErr);
        r.Put("sent", sent);
        if (o.Hash)
            r.Put("hash", wh.ToString("x16"));
        r.Put("recv", got);
        if (o.Hash)
            r.Put("recv_hash", rh.ToString("x16"));
        double t = Math.Max(writeDone, readDone);
        r.Put("data_s", t.ToString("F3"));
        if (t > 0)
            r.Put("MBps", (Math.Max(got, sent) / 1e6 / t).ToString("F1"));
        if (o.Recv >= 0 && got != o.Recv && readErr == null)
            r.Fail("end of stream after " + got + " of " + o.Recv +
                   " bytes");
    }
}
