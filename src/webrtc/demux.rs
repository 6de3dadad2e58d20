//! Which WebRTC session a datagram on the shared UDP port belongs to. Pure: no sockets.
//!
//! Every session answers on one muxed port. A browser's first packets are STUN binding
//! requests whose USERNAME is `<our ufrag>:<its ufrag>`; the ufrag names the session, and the
//! source address it came from is remembered, so the DTLS, SRTP and RTCP that follow from that
//! address go to the same session. str0m still checks each STUN request's integrity with the
//! session's password: a forged ufrag gets nothing.
//!
//! Belongs here: reading the ufrag and the routing table. Does not belong here: the socket
//! (`mod`), what a session does with its packets (`session`).

use core::net::SocketAddr;
use std::collections::HashMap;

/// Source addresses remembered in all; more are not learnt (a flood of forged requests with
/// a valid ufrag could otherwise grow the table).
const MAX_ADDRS: usize = 65_536;
/// Source addresses one session may use (ICE tries a few pairs; no more are needed).
const MAX_ADDRS_PER_SESSION: usize = 16;

/// The local (our) ufrag of a STUN binding request, `None` for anything else.
pub fn stun_local_ufrag(packet: &[u8]) -> Option<&str> {
    // STUN: top two bits 0, binding request (0x0001), the magic cookie.
    if packet.len() < 20 || packet[0..2] != [0x00, 0x01] || packet[4..8] != [0x21, 0x12, 0xa4, 0x42]
    {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let attrs = packet.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= attrs.len() {
        let kind = u16::from_be_bytes([attrs[at], attrs[at + 1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[at + 2], attrs[at + 3]]));
        let value = attrs.get(at + 4..at + 4 + alen)?;
        if kind == 0x0006 {
            let user = std::str::from_utf8(value).ok()?;
            return user.split_once(':').map(|(ours, _)| ours);
        }
        at += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// Sessions by ufrag and by the source addresses learnt for them.
#[derive(Debug)]
pub struct Routes<T> {
    by_ufrag: HashMap<String, (T, usize)>,
    by_addr: HashMap<SocketAddr, String>,
}

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Routes {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
        }
    }
}

impl<T> Routes<T> {
    pub fn insert(&mut self, ufrag: String, session: T) {
        self.by_ufrag.insert(ufrag, (session, 0));
    }

    /// Forgets a session and every address learnt for it.
    pub fn remove(&mut self, ufrag: &str) {
        if self.by_ufrag.remove(ufrag).is_some() {
            self.by_addr.retain(|_, u| u != ufrag);
        }
    }

    /// The session a datagram from `from` belongs to, learning `from` when the datagram is a
    /// STUN request naming a session.
    pub fn route(&mut self, from: SocketAddr, packet: &[u8]) -> Option<&T> {
        // A STUN request names its session even from a known address (ICE restarts, a port
        // reused by another browser).
        if let Some(ufrag) = stun_local_ufrag(packet) {
            let (_, learnt) = self.by_ufrag.get_mut(ufrag)?;
            if self.by_addr.get(&from).map(String::as_str) != Some(ufrag)
                && *learnt < MAX_ADDRS_PER_SESSION
                && self.by_addr.len() < MAX_ADDRS
            {
                *learnt += 1;
                self.by_addr.insert(from, ufrag.to_owned());
            }
            return self.by_ufrag.get(ufrag).map(|(s, _)| s);
        }
        let ufrag = self.by_addr.get(&from)?;
        self.by_ufrag.get(ufrag).map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(user: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // A PRIORITY attribute first, then USERNAME padded to 4 bytes.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&[0x00, 0x06]);
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        p.extend_from_slice(&[7; 12]);
        p.extend_from_slice(&attrs);
        p
    }

    #[test]
    fn stun_requests_name_their_session_and_teach_the_address() {
        let mut r = Routes::default();
        r.insert("abcd".to_owned(), 1);
        r.insert("wxyz".to_owned(), 2);
        let a: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:5000".parse().expect("addr");
        assert_eq!(r.route(a, b"\x17\xfe\xfd dtls before stun"), None);
        assert_eq!(r.route(a, &binding_request("abcd:peer1")), Some(&1));
        assert_eq!(r.route(b, &binding_request("wxyz:pe")), Some(&2));
        // DTLS and SRTP from a learnt address.
        assert_eq!(r.route(a, b"\x17\xfe\xfd"), Some(&1));
        assert_eq!(r.route(b, b"\x80\x60"), Some(&2));
        // An unknown ufrag teaches nothing.
        let c: SocketAddr = "10.0.0.3:5000".parse().expect("addr");
        assert_eq!(r.route(c, &binding_request("nope:x")), None);
        assert_eq!(r.route(c, b"\x80"), None);
        r.remove("abcd");
        assert_eq!(r.route(a, b"\x80"), None);
        assert_eq!(r.by_ufrag.len(), 1);
    }

    #[test]
    fn a_session_learns_a_bounded_number_of_addresses() {
        let mut r = Routes::default();
        r.insert("abcd".to_owned(), ());
        for port in 0..100u16 {
            let from = SocketAddr::from(([10, 0, 0, 1], 1000 + port));
            r.route(from, &binding_request("abcd:x"));
        }
        assert_eq!(r.by_addr.len(), MAX_ADDRS_PER_SESSION);
    }

    #[test]
    fn truncated_and_odd_packets_are_not_stun() {
        let p = binding_request("abcd:peer");
        for cut in 0..p.len() {
            let _ = stun_local_ufrag(&p[..cut]);
        }
        assert_eq!(stun_local_ufrag(&p), Some("abcd"));
        assert_eq!(stun_local_ufrag(&binding_request("no-colon")), None);
        assert_eq!(stun_local_ufrag(&[0u8; 20]), None);
    }
}
