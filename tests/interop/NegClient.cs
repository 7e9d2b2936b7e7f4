// NegClient: a real .NET NegotiateStream client for libnegstream's interop
// tests.  Compiled with Mono's mcs, run on the .NET Core 2.0 runtime (Mono's
// own NegotiateStream is a stub):
//
//   mcs -r:System.dll NegClient.cs -out:NegClient.dll
//   DOTNET_MULTILEVEL_LOOKUP=0 dotnet exec --runtimeconfig \
//       NegClient.runtimeconfig.json NegClient.dll HOST PORT TARGET LEVEL ...
// (or put NegClient.runtimeconfig.json beside the dll and drop "exec ...").
//
// LEVEL is None, Sign or EncryptAndSign.  Options:
//   --user U --password P [--domain D]  explicit NetworkCredential
//                                       (else DefaultNetworkCredentials)
//   --impersonation L   Identification (default), Impersonation, Delegation
//   --sync-auth         AuthenticateAsClient instead of Begin/End
//   --zero-write        one 0-byte BeginWrite before the data
//   --send-small        one write of a short text message
//   --send-big N        one BeginWrite of N bytes
//   --send-stream N     N bytes as a chain of BeginWrite calls, each issued
//                       from the previous one's callback (--chunk C bytes)
//   --echo              expect the server to echo everything back
//   --recv N            read N bytes from the server
//   --no-hash           do not hash (throughput runs: bench/dotnet.sh)
//   --drop-after-bytes N  test mode: write at most N bytes to the socket in
//                       all, then close it (a client that dies mid-message)
//   --close-before-read test mode: close the socket instead of the first
//                       read, i.e. right after the first handshake message
//
// Data bytes are pattern bytes (offset % 251, restarting with each write).
// All data sent is hashed with FNV-1a 64, and so is all data received; the
// Python acceptor and the C tests use the same hash.  Reads run on their
// own thread while the writes go on, so an echoing peer cannot deadlock us.
//
// Output: one line of key=value pairs on stdout.  Exit 0 on success, 1 on
// any failure (the line then ends with error=<Type>: <message>).
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Principal;
using System.Text;
using System.Threading;

static class Fnv
{
    public const ulong Offset = 14695981039346656037UL;
    const ulong Prime = 1099511628211UL;
    public static bool Enabled = true;

    public static ulong Add(ulong h, byte[] buf, int off, int count)
    {
        if (!Enabled)
            return h;
        for (int i = off; i < off + count; i++) {
            h ^= buf[i];
            h *= Prime;
        }
        return h;
    }
}

class Options
{
    public string Host, Target, User, Password, Domain = "";
    public int Port;
    public ProtectionLevel Level;
    public TokenImpersonationLevel Impersonation =
        TokenImpersonationLevel.Identification;
    public bool SyncAuth, ZeroWrite, SendSmall, Echo, NoHash, CloseBeforeRead;
    public long SendBig = -1, SendStream = -1, Recv = -1, DropAfter = -1;
    public int Chunk = 256 * 1024;

    static long Count(string[] a, ref int i)
    {
        if (i + 1 >= a.Length)
            throw new ArgumentException(a[i] + " needs a value");
        long n = long.Parse(a[++i]);
        if (n < 0)
            throw new ArgumentException(a[i - 1] + " must be >= 0");
        return n;
    }

    static string Str(string[] a, ref int i)
    {
        if (i + 1 >= a.Length)
            throw new ArgumentException(a[i] + " needs a value");
        return a[++i];
    }

    public static Options Parse(string[] a)
    {
        if (a.Length < 4)
            throw new ArgumentException(
                "usage: NegClient HOST PORT TARGET None|Sign|EncryptAndSign "
                + "[options]");
        var o = new Options();
        o.Host = a[0];
        o.Port = int.Parse(a[1]);
        o.Target = a[2];
        o.Level = (ProtectionLevel)Enum.Parse(typeof(ProtectionLevel), a[3]);
        for (int i = 4; i < a.Length; i++) {
            switch (a[i]) {
            case "--user": o.User = Str(a, ref i); break;
            case "--password": o.Password = Str(a, ref i); break;
            case "--domain": o.Domain = Str(a, ref i); break;
            case "--impersonation":
                o.Impersonation = (TokenImpersonationLevel)Enum.Parse(
                    typeof(TokenImpersonationLevel), Str(a, ref i));
                break;
            case "--sync-auth": o.SyncAuth = true; break;
            case "--zero-write": o.ZeroWrite = true; break;
            case "--send-small": o.SendSmall = true; break;
            case "--send-big": o.SendBig = Count(a, ref i); break;
            case "--send-stream": o.SendStream = Count(a, ref i); break;
            case "--chunk": o.Chunk = (int)Count(a, ref i); break;
            case "--echo": o.Echo = true; break;
            case "--recv": o.Recv = Count(a, ref i); break;
            case "--no-hash": o.NoHash = true; break;
            case "--drop-after-bytes": o.DropAfter = Count(a, ref i); break;
            case "--close-before-read": o.CloseBeforeRead = true; break;
            default: throw new ArgumentException("unknown option " + a[i]);
            }
        }
        if (o.Echo && o.Recv >= 0)
            throw new ArgumentException(
                "--echo and --recv exclude each other");
        if (o.Chunk <= 0)
            throw new ArgumentException("--chunk must be > 0");
        return o;
    }
}

// The transport under NegotiateStream in the test modes that make the
// client vanish in the middle of the handshake: the bytes NegotiateStream
// writes really go out (up to a limit), then the socket is closed.
class DropStream : Stream
{
    readonly Stream inner;
    readonly TcpClient tcp;
    long left;
    readonly bool closeBeforeRead;

    public DropStream(TcpClient tcp, long dropAfter, bool closeBeforeRead)
    {
        this.tcp = tcp;
        inner = tcp.GetStream();
        left = dropAfter;
        this.closeBeforeRead = closeBeforeRead;
    }

    public override bool CanRead { get { return true; } }
    public override bool CanWrite { get { return true; } }
    public override bool CanSeek { get { return false; } }
    public override long Length { get { throw new NotSupportedException(); } }
    public override long Position {
        get { throw new NotSupportedException(); }
        set { throw new NotSupportedException(); }
    }
    public override long Seek(long o, SeekOrigin s)
    {
        throw new NotSupportedException();
    }
    public override void SetLength(long v)
    {
        throw new NotSupportedException();
    }
    public override void Flush() { inner.Flush(); }

    public override int Read(byte[] b, int off, int count)
    {
        if (closeBeforeRead) {
            tcp.Close();
            throw new IOException("test mode: closed the connection instead "
                                  + "of reading the server's reply");
        }
        return inner.Read(b, off, count);
    }

    public override void Write(byte[] b, int off, int count)
    {
        if (left >= 0 && count > left) {
            inner.Write(b, off, (int)left);
            inner.Flush();
            left = 0;
            tcp.Close();
            throw new IOException("test mode: closed the connection in the "
                                  + "middle of a write");
        }
        if (left >= 0)
            left -= count;
        inner.Write(b, off, count);
    }
}

// Reads until 'expect' bytes have arrived (or EOF), hashing them.
class Reader
{
    readonly Stream s;
    readonly long expect;
    public long Got;
    public ulong Hash = Fnv.Offset;
    public Exception Error;
    public bool Eof;
    readonly Thread t;

    public Reader(Stream s, long expect)
    {
        this.s = s;
        this.expect = expect;
        t = new Thread(Run);
        t.IsBackground = true;
        t.Start();
    }

    void Run()
    {
        var buf = new byte[128 * 1024];
        try {
            while (Got < expect) {
                int want = (int)Math.Min(buf.Length, expect - Got);
                int n = s.Read(buf, 0, want);
                if (n == 0) {
                    Eof = true;
                    break;
                }
                Hash = Fnv.Add(Hash, buf, 0, n);
                Got += n;
            }
        } catch (Exception e) {
            Error = e;
        }
    }

    public void Join() { t.Join(); }
}

// A chain of BeginWrite calls: each completion issues the next write, the
// way an APM program streams data.  Synchronous completions are continued
// in a loop by the caller of BeginWrite instead of recursing.
class StreamWriter
{
    readonly NegotiateStream ns;
    readonly byte[] buf;
    long left;
    public readonly ManualResetEvent Done = new ManualResetEvent(false);
    public Exception Error;
    public ulong Hash;
    public long Sent;

    public StreamWriter(NegotiateStream ns, long total, int chunk, ulong hash)
    {
        this.ns = ns;
        left = total;
        Hash = hash;
        buf = Program.Pattern((int)Math.Min(chunk, Math.Max(total, 1)));
    }

    public void Start() { Next(); }

    // Issue writes until one goes asynchronous or the data runs out.
    void Next()
    {
        try {
            while (left > 0) {
                int n = (int)Math.Min(buf.Length, left);
                IAsyncResult ar = ns.BeginWrite(buf, 0, n, OnWritten, n);
                if (!ar.CompletedSynchronously)
                    return;
                Finish(ar);
            }
        } catch (Exception e) {
            Error = e;
        }
        Done.Set();
    }

    void Finish(IAsyncResult ar)
    {
        ns.EndWrite(ar);
        int n = (int)ar.AsyncState;
        Hash = Fnv.Add(Hash, buf, 0, n);
        Sent += n;
        left -= n;
    }

    void OnWritten(IAsyncResult ar)
    {
        if (ar.CompletedSynchronously)
            return;              // the loop in Next() continues it
        try {
            Finish(ar);
        } catch (Exception e) {
            Error = e;
            Done.Set();
            return;
        }
        Next();
    }
}

static class Program
{
    // The result line: keys in first-set order; setting a key again
    // replaces its value (the failure path updates "sent").
    static readonly List<string> Keys = new List<string>();
    static readonly Dictionary<string, string> Vals =
        new Dictionary<string, string>();

    static void Put(string k, object v)
    {
        string s = v == null ? "" : v.ToString();
        // "error" always comes last and keeps its spaces: it is the rest
        // of the line.  Other values must stay single words.
        if (k != "error")
            s = s.Replace(' ', '_');
        if (!Vals.ContainsKey(k))
            Keys.Add(k);
        Vals[k] = s;
    }

    static string Line()
    {
        var sb = new StringBuilder();
        foreach (string k in Keys) {
            if (k == "error")
                continue;
            sb.Append(sb.Length > 0 ? " " : "").Append(k).Append('=')
              .Append(Vals[k]);
        }
        if (Vals.ContainsKey("error"))
            sb.Append(sb.Length > 0 ? " " : "").Append("error=")
              .Append(Vals["error"]);
        return sb.ToString();
    }

    public static byte[] Pattern(int n)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++)
            b[i] = (byte)(i % 251);
        return b;
    }

    static string Describe(Exception e)
    {
        var sb = new StringBuilder();
        sb.Append(e.GetType().Name).Append(": ").Append(e.Message);
        for (var inner = e.InnerException; inner != null;
             inner = inner.InnerException) {
            sb.Append(" --> ").Append(inner.GetType().Name).Append(": ")
              .Append(inner.Message);
            var w = inner as System.ComponentModel.Win32Exception;
            if (w != null)
                sb.AppendFormat(" (NativeErrorCode=0x{0:X8})",
                                w.NativeErrorCode);
        }
        return sb.ToString().Replace('\n', ' ').Replace('\r', ' ');
    }

    // One BeginWrite/EndWrite of a whole buffer.
    static void WriteOnce(NegotiateStream ns, byte[] b, ref ulong hash,
                          ref long sent)
    {
        IAsyncResult ar = ns.BeginWrite(b, 0, b.Length, null, null);
        ns.EndWrite(ar);
        hash = Fnv.Add(hash, b, 0, b.Length);
        sent += b.Length;
    }

    static int Main(string[] args)
    {
        Options o;
        try {
            o = Options.Parse(args);
        } catch (Exception e) {
            Console.Error.WriteLine("NegClient: " + e.Message);
            return 2;
        }

        int rc = 1;
        var sw = new Stopwatch();
        TcpClient tcp = null;
        NegotiateStream ns = null;
        long sent = 0;
        ulong hash = Fnv.Offset;
        Reader reader = null;
        try {
            tcp = new TcpClient();
            tcp.Connect(o.Host, o.Port);
            Fnv.Enabled = !o.NoHash;
            Stream transport = tcp.GetStream();
            if (o.DropAfter >= 0 || o.CloseBeforeRead)
                transport = new DropStream(tcp, o.DropAfter,
                                           o.CloseBeforeRead);
            ns = new NegotiateStream(transport, false);

            NetworkCredential cred = o.User != null
                ? new NetworkCredential(o.User, o.Password, o.Domain)
                : CredentialCache.DefaultNetworkCredentials;
            if (o.SyncAuth) {
                ns.AuthenticateAsClient(cred, o.Target, o.Level,
                                        o.Impersonation);
            } else {
                IAsyncResult ar = ns.BeginAuthenticateAsClient(
                    cred, o.Target, o.Level, o.Impersonation, null, null);
                ns.EndAuthenticateAsClient(ar);
            }
            Put("authenticated", ns.IsAuthenticated);
            Put("encrypted", ns.IsEncrypted);
            Put("signed", ns.IsSigned);
            Put("mutual", ns.IsMutuallyAuthenticated);
            Put("impersonation", ns.ImpersonationLevel);
            Put("remote_name", ns.RemoteIdentity.Name);
            Put("remote_type", ns.RemoteIdentity.AuthenticationType);

            sw.Start();
            long expect = o.Recv;
            if (o.Echo) {
                expect = (o.SendSmall ? Small().Length : 0)
                    + Math.Max(o.SendBig, 0) + Math.Max(o.SendStream, 0);
            }
            if (expect > 0)
                reader = new Reader(ns, expect);

            if (o.ZeroWrite)
                WriteOnce(ns, new byte[0], ref hash, ref sent);
            if (o.SendSmall)
                WriteOnce(ns, Small(), ref hash, ref sent);
            if (o.SendBig >= 0)
                WriteOnce(ns, Pattern((int)o.SendBig), ref hash, ref sent);
            if (o.SendStream >= 0) {
                var w = new StreamWriter(ns, o.SendStream, o.Chunk, hash);
                w.Start();
                w.Done.WaitOne();
                if (w.Error != null)
                    throw w.Error;
                hash = w.Hash;
                sent += w.Sent;
            }
            Put("sent", sent);
            Put("hash", hash.ToString("x16"));

            bool ok = true;
            if (reader != null) {
                reader.Join();
                if (reader.Error != null)
                    throw reader.Error;
                Put("recv", reader.Got);
                Put("recv_hash", reader.Hash.ToString("x16"));
                if (reader.Got != expect) {
                    Put("short_read", "EOF_after_" + reader.Got);
                    ok = false;
                }
                if (o.Echo) {
                    bool same = reader.Hash == hash && reader.Got == sent;
                    Put("echo_ok", same);
                    ok = ok && same;
                }
            }
            sw.Stop();
            Put("elapsed", sw.Elapsed.TotalSeconds.ToString("F3"));
            if (sw.Elapsed.TotalSeconds > 0 && sent > 0)
                Put("MiB_per_s", (sent / 1048576.0
                                  / sw.Elapsed.TotalSeconds).ToString("F1"));
            rc = ok ? 0 : 1;
        } catch (Exception e) {
            if (ns != null)
                Put("authenticated", ns.IsAuthenticated);
            Put("sent", sent);
            Put("error", Describe(e));
            rc = 1;
        } finally {
            if (ns != null)
                ns.Close();
            else if (tcp != null)
                tcp.Close();
        }
        Console.WriteLine(Line());
        return rc;
    }

    static byte[] Small()
    {
        return Encoding.ASCII.GetBytes("hello from .NET NegotiateStream\n");
    }
}
