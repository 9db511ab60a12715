//! The audited `unsafe` of SRT ingest: the few libsrt calls Strata makes, declared by hand.
//!
//! Why libsrt (Haivision's reference implementation, Debian's `libsrt1.5-gnutls` 1.5.1, the build FFmpeg's libavformat loads) and not a
//! Rust SRT crate: `srt-tokio`/`srt-protocol` 0.4.4 (the maintained pure-Rust one) says it is
//! not production ready, and its packet and handshake parsing panics on input a caller controls
//! (`unimplemented!` on unknown control types and on encryption mismatches, `panic!` in loss-list
//! decompression), which would end the listener for every publisher. libsrt is what OBS, ffmpeg,
//! GStreamer and vMix link, so it speaks exactly their SRT. Why hand-written declarations: the
//! binding crate `libsrt-sys` 1.4.13 builds an old libsrt from source; we call about fifteen
//! functions of the system library, declared here from `srt/srt.h` 1.5.
//!
//! Every call goes through a safe wrapper below that checks lengths and turns libsrt's error
//! state into `SrtError`. libsrt is thread-safe; its calls block, so they run on dedicated
//! threads (see `listener`), never on the async runtime.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

/// libsrt's socket handle.
pub type RawSocket = c_int;

const SRT_INVALID_SOCK: RawSocket = -1;
const SRT_ERROR: c_int = -1;

/// `SRT_SOCKOPT` values from `srt.h` 1.5 (stable across 1.4–1.5).
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
enum SockOpt {
    RcvSyn = 2,
    RcvTimeo = 14,
    Latency = 23,
    Passphrase = 26,
    PbKeyLen = 27,
    StreamId = 46,
    PayloadSize = 49,
    TransType = 50,
    EnforcedEncryption = 53,
    PeerIdleTimeo = 55,
}

/// `SRTT_LIVE`.
const TRANSTYPE_LIVE: c_int = 0;
/// `SRT_EASYNCRCV` (non-blocking: nothing to read) and `SRT_ETIMEOUT` (blocking: `SRTO_RCVTIMEO`
/// passed with nothing to read).
const ERR_RECV_TIMEOUTS: [c_int; 2] = [6002, 6003];
/// libsrt's limit on a stream id.
pub const MAX_STREAM_ID: usize = 512;
/// The largest SRT live payload (1316 = 7 TS packets is what encoders send).
pub const MAX_PAYLOAD: usize = 1456;

/// `srt_listen_callback_fn`: returns 0 to accept, -1 to reject.
pub type ListenCallback = extern "C" fn(
    opaque: *mut c_void,
    socket: RawSocket,
    hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int;

// The very libsrt FFmpeg's libavformat links (Debian builds it against GnuTLS), by its
// runtime name: a second copy (`libsrt.so`, the OpenSSL build) in the same process runs its
// C++ static destructors over the first one's globals at exit, and the process ended with a
// segmentation fault after every clean shutdown that had started SRT.
#[link(name = "libsrt-gnutls.so.1.5", kind = "dylib", modifiers = "+verbatim")]
extern "C" {
    fn srt_startup() -> c_int;
    fn srt_cleanup() -> c_int;
    fn srt_create_socket() -> RawSocket;
    fn srt_bind(u: RawSocket, name: *const libc::sockaddr, namelen: c_int) -> c_int;
    fn srt_listen(u: RawSocket, backlog: c_int) -> c_int;
    fn srt_listen_callback(lsn: RawSocket, hook: ListenCallback, opaque: *mut c_void) -> c_int;
    fn srt_accept(u: RawSocket, addr: *mut libc::sockaddr, addrlen: *mut c_int) -> RawSocket;
    fn srt_close(u: RawSocket) -> c_int;
    fn srt_getsockflag(u: RawSocket, opt: c_int, val: *mut c_void, len: *mut c_int) -> c_int;
    fn srt_setsockflag(u: RawSocket, opt: c_int, val: *const c_void, len: c_int) -> c_int;
    fn srt_getsockname(u: RawSocket, name: *mut libc::sockaddr, namelen: *mut c_int) -> c_int;
    fn srt_recvmsg(u: RawSocket, buf: *mut c_char, len: c_int) -> c_int;
    fn srt_getlasterror(errno_loc: *mut c_int) -> c_int;
    fn srt_getlasterror_str() -> *const c_char;
    fn srt_setrejectreason(sock: RawSocket, value: c_int) -> c_int;
    fn srt_setloglevel(level: c_int);
}

#[derive(Debug, thiserror::Error)]
#[error("{call}: {message} (SRT error {code})")]
pub struct SrtError {
    call: &'static str,
    code: c_int,
    message: String,
}

impl SrtError {
    /// The error libsrt recorded for this thread's last call.
    fn last(call: &'static str) -> Self {
        // SAFETY: both read libsrt's thread-local error state; the string is owned by libsrt
        // and valid until the next call on this thread, and is copied at once.
        let (code, message) = unsafe {
            let code = srt_getlasterror(std::ptr::null_mut());
            let text = srt_getlasterror_str();
            let message = if text.is_null() {
                String::new()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            };
            (code, message)
        };
        Self {
            call,
            code,
            message,
        }
    }

    pub fn is_timeout(&self) -> bool {
        ERR_RECV_TIMEOUTS.contains(&self.code)
    }
}

/// libsrt was started (and not cleaned up).
static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Stops libsrt's own threads before the process exits. Without it, libsrt's static
/// destructors run at exit while its threads still use them, and the process ends with a
/// segmentation fault after a clean shutdown. Call it once every SRT socket is closed.
pub fn cleanup() {
    if STARTED.swap(false, Ordering::AcqRel) {
        // SAFETY: a plain call; every socket of this process is closed by now (the caller's
        // contract), and `STARTED` makes it the only one.
        unsafe {
            srt_cleanup();
        }
    }
}

/// Starts libsrt once per process and keeps its own logging to errors (ours says what
/// happened to each connection).
pub fn startup() -> Result<(), SrtError> {
    static START: Once = Once::new();
    let mut result = Ok(());
    START.call_once(|| {
        // SAFETY: plain calls without pointers; `srt_startup` may be called once per process.
        unsafe {
            if srt_startup() < 0 {
                result = Err(SrtError::last("srt_startup"));
            } else {
                STARTED.store(true, Ordering::Release);
            }
            srt_setloglevel(libc::LOG_ERR);
        }
    });
    result
}

/// An SRT socket this process owns (a handle into libsrt's own thread-safe tables); closed
/// by `close` or on drop, once.
#[derive(Debug)]
pub struct Socket(AtomicI32);

impl Drop for Socket {
    fn drop(&mut self) {
        self.close();
    }
}

fn check(call: &'static str, rc: c_int) -> Result<(), SrtError> {
    if rc == SRT_ERROR {
        Err(SrtError::last(call))
    } else {
        Ok(())
    }
}

/// What a listener needs to know.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Receiver latency (TSBPD), in milliseconds.
    pub latency_ms: i32,
    /// Callers must use this passphrase (AES); `None`: unencrypted callers only.
    pub passphrase: Option<String>,
    /// A connection silent this long is broken (libsrt's peer-idle timeout), in milliseconds.
    pub peer_idle_ms: i32,
}

impl Socket {
    fn raw(&self) -> RawSocket {
        self.0.load(Ordering::Acquire)
    }

    /// Closes the socket now (a thread blocked in `accept` or `recv` on it returns an error).
    pub fn close(&self) {
        let raw = self.0.swap(SRT_INVALID_SOCK, Ordering::AcqRel);
        if raw != SRT_INVALID_SOCK {
            // SAFETY: the handle came from libsrt and the swap makes this its only close.
            unsafe {
                srt_close(raw);
            }
        }
    }

    fn set_int(&self, opt: SockOpt, value: c_int) -> Result<(), SrtError> {
        self.set_bytes(opt, &value.to_ne_bytes())
    }

    /// libsrt's bool options take one byte.
    fn set_bool(&self, opt: SockOpt, value: bool) -> Result<(), SrtError> {
        self.set_bytes(opt, &[u8::from(value)])
    }

    fn set_bytes(&self, opt: SockOpt, value: &[u8]) -> Result<(), SrtError> {
        let len = c_int::try_from(value.len()).unwrap_or(c_int::MAX);
        // SAFETY: `value` is a live buffer of `len` bytes.
        let rc = unsafe { srt_setsockflag(self.raw(), opt as c_int, value.as_ptr().cast(), len) };
        check("srt_setsockflag", rc)
    }

    /// A live-mode listener on `addr`, with `callback(opaque, …)` deciding on every caller
    /// before its handshake completes (`opaque` is `state`, which lives as long as the process).
    pub fn listen<T: Sync>(
        addr: SocketAddr,
        options: &ListenOptions,
        callback: ListenCallback,
        state: &'static T,
    ) -> Result<Self, SrtError> {
        let opaque: *mut c_void = (state as *const T).cast_mut().cast();
        startup()?;
        // SAFETY: a plain constructor call.
        let raw = unsafe { srt_create_socket() };
        if raw == SRT_INVALID_SOCK {
            return Err(SrtError::last("srt_create_socket"));
        }
        let socket = Socket(AtomicI32::new(raw));
        socket.set_int(SockOpt::TransType, TRANSTYPE_LIVE)?;
        socket.set_int(SockOpt::Latency, options.latency_ms)?;
        socket.set_int(SockOpt::PeerIdleTimeo, options.peer_idle_ms)?;
        socket.set_int(SockOpt::PayloadSize, 1316)?;
        if let Some(passphrase) = &options.passphrase {
            socket.set_bytes(SockOpt::Passphrase, passphrase.as_bytes())?;
            socket.set_int(SockOpt::PbKeyLen, 0)?; // 0: the caller's key length
            socket.set_bool(SockOpt::EnforcedEncryption, true)?;
        }
        let (storage, len) = sockaddr(addr);
        // SAFETY: `storage` holds a sockaddr of `len` bytes for `addr`'s family.
        check("srt_bind", unsafe {
            srt_bind(raw, (&raw const storage).cast(), len)
        })?;
        // SAFETY: `callback` is a plain function; `opaque` points to `'static` data.
        check("srt_listen_callback", unsafe {
            srt_listen_callback(raw, callback, opaque)
        })?;
        // SAFETY: a plain call on our socket.
        check("srt_listen", unsafe { srt_listen(raw, 64) })?;
        Ok(socket)
    }

    /// The address the socket is bound to (its port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, SrtError> {
        // SAFETY: zeroed storage is a valid sockaddr_storage; libsrt writes at most `len` bytes.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
        check("srt_getsockname", unsafe {
            srt_getsockname(self.raw(), (&raw mut storage).cast(), &mut len)
        })?;
        from_sockaddr(&storage).ok_or_else(|| SrtError {
            call: "srt_getsockname",
            code: 0,
            message: "not an IP address".into(),
        })
    }

    /// Blocks until a caller connects (callers the listen callback rejected never show up).
    /// Fails once the listener is closed.
    pub fn accept(&self) -> Result<(Socket, Option<SocketAddr>), SrtError> {
        // SAFETY: as in `local_addr`.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: libsrt writes at most `len` bytes of the peer's address.
        let raw = unsafe { srt_accept(self.raw(), (&raw mut storage).cast(), &mut len) };
        if raw == SRT_INVALID_SOCK {
            return Err(SrtError::last("srt_accept"));
        }
        Ok((Socket(AtomicI32::new(raw)), from_sockaddr(&storage)))
    }

    /// The caller's stream id (what `?streamid=` set), at most `MAX_STREAM_ID` bytes.
    pub fn stream_id(&self) -> Result<String, SrtError> {
        let mut buf = [0u8; MAX_STREAM_ID + 1];
        let mut len = buf.len() as c_int;
        // SAFETY: libsrt writes at most `len` bytes into `buf` and stores the length in `len`.
        check("srt_getsockflag", unsafe {
            srt_getsockflag(
                self.raw(),
                SockOpt::StreamId as c_int,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        })?;
        let len = usize::try_from(len).unwrap_or(0).min(MAX_STREAM_ID);
        let id = &buf[..len];
        // the option may be NUL-terminated inside `len`
        let id = id.split(|b| *b == 0).next().unwrap_or_default();
        Ok(String::from_utf8_lossy(id).into_owned())
    }

    /// Makes `recv` give up after `timeout_ms` without data (then `SrtError::is_timeout`).
    pub fn set_recv_timeout(&self, timeout_ms: i32) -> Result<(), SrtError> {
        self.set_bool(SockOpt::RcvSyn, true)?;
        self.set_int(SockOpt::RcvTimeo, timeout_ms)
    }

    /// One received message (an SRT live payload) into `buf`; `Ok(0)` never means end of
    /// stream: a closed or broken connection is an error.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, SrtError> {
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: libsrt writes at most `len` bytes into `buf`.
        let n = unsafe { srt_recvmsg(self.raw(), buf.as_mut_ptr().cast(), len) };
        if n < 0 {
            return Err(SrtError::last("srt_recvmsg"));
        }
        Ok(usize::try_from(n).unwrap_or(0).min(buf.len()))
    }
}

/// Sets the rejection code a caller sees (from the listen callback).
pub fn set_reject_reason(socket: RawSocket, code: c_int) {
    // SAFETY: a plain call on a socket handle libsrt passed to the callback.
    unsafe {
        srt_setrejectreason(socket, code);
    }
}

/// The stream id passed to the listen callback, if valid UTF-8 within libsrt's limit.
///
/// # Safety
/// `stream_id` is null or a NUL-terminated string libsrt keeps alive for the callback.
pub unsafe fn callback_stream_id(stream_id: *const c_char) -> Option<String> {
    if stream_id.is_null() {
        return Some(String::new());
    }
    let bytes = CStr::from_ptr(stream_id).to_bytes();
    if bytes.len() > MAX_STREAM_ID {
        return None;
    }
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

/// The peer address passed to the listen callback.
///
/// # Safety
/// `peer` is null or points to a sockaddr of its family's size, alive for the callback.
pub unsafe fn callback_peer(peer: *const libc::sockaddr) -> Option<SocketAddr> {
    if peer.is_null() {
        return None;
    }
    match i32::from((*peer).sa_family) {
        libc::AF_INET => {
            let v4 = &*(peer as *const libc::sockaddr_in);
            Some(SocketAddr::from((
                u32::from_be(v4.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            let v6 = &*(peer as *const libc::sockaddr_in6);
            Some(SocketAddr::from((
                v6.sin6_addr.s6_addr,
                u16::from_be(v6.sin6_port),
            )))
        }
        _ => None,
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, c_int) {
    // SAFETY: zeroed storage is a valid sockaddr_storage, large enough for either family.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as c_int)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: a sockaddr_storage is valid to read as the sockaddr its family says it is.
    unsafe { callback_peer((storage as *const libc::sockaddr_storage).cast()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_survive_the_round_trip_through_sockaddr() {
        for addr in ["127.0.0.1:9000", "[::1]:9001", "0.0.0.0:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (storage, _) = sockaddr(addr);
            assert_eq!(from_sockaddr(&storage), Some(addr));
        }
    }
}
