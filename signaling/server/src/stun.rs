//! The built-in STUN server: answers Binding requests (RFC 5389) with the requester's
//! address in XOR-MAPPED-ADDRESS, so that `connack.iceServers` always has a working entry
//! with nothing outside the machine.

use std::net::SocketAddr;

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::Attribute;
use stun_codec::rfc5389::attributes::{Software, XorMappedAddress};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The answer to one datagram from `peer`: a Binding success response for a Binding request,
/// `None` for anything else (not STUN, another method or class), which is dropped.
pub fn answer(datagram: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
    let mut decoder = MessageDecoder::<Attribute>::new();
    let request = decoder.decode_from_bytes(datagram).ok()?.ok()?;
    if request.class() != MessageClass::Request || request.method() != BINDING {
        return None;
    }
    let mut response =
        Message::<Attribute>::new(MessageClass::SuccessResponse, BINDING, request.transaction_id());
    response.add_attribute(XorMappedAddress::new(peer));
    if let Ok(software) = Software::new("wilddog-server".to_owned()) {
        response.add_attribute(software);
    }
    MessageEncoder::new().encode_into_bytes(response).ok()
}

/// Answers Binding requests on `socket` until `stop` is cancelled.
pub async fn serve(socket: UdpSocket, stop: CancellationToken) {
    let mut buf = vec![0u8; 1500];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, peer)) => {
                if let Some(reply) = answer(&buf[..n], peer) {
                    if let Err(e) = socket.send_to(&reply, peer).await {
                        tracing::debug!(%peer, "STUN reply not sent: {e}");
                    }
                } else {
                    tracing::trace!(%peer, bytes = n, "ignored a datagram that is no STUN Binding request");
                }
            }
            // ICMP port unreachable from an earlier reply shows up as an error here on some
            // systems; it concerns one peer only.
            Err(e) => tracing::debug!("STUN socket: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_codec::TransactionId;

    fn binding_request(class: MessageClass) -> Vec<u8> {
        let m = Message::<Attribute>::new(class, BINDING, TransactionId::new([7; 12]));
        MessageEncoder::new().encode_into_bytes(m).unwrap()
    }

    #[test]
    fn binding_request_gets_xor_mapped_address() {
        for peer in ["192.0.2.1:54321", "[2001:db8::1]:9"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let reply = answer(&binding_request(MessageClass::Request), peer).unwrap();
            // Header: Binding success 0x0101, magic cookie, our transaction id.
            assert_eq!(&reply[0..2], &[0x01, 0x01]);
            assert_eq!(&reply[4..8], &[0x21, 0x12, 0xA4, 0x42]);
            assert_eq!(&reply[8..20], &[7; 12]);
            let decoded =
                MessageDecoder::<Attribute>::new().decode_from_bytes(&reply).unwrap().unwrap();
            let mapped = decoded.get_attribute::<XorMappedAddress>().unwrap();
            assert_eq!(mapped.address(), peer);
        }
    }

    #[test]
    fn other_datagrams_are_ignored() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(answer(b"hello", peer).is_none());
        assert!(answer(&[], peer).is_none());
        assert!(answer(&binding_request(MessageClass::Indication), peer).is_none());
        assert!(answer(&binding_request(MessageClass::SuccessResponse), peer).is_none());
        let mut truncated = binding_request(MessageClass::Request);
        truncated.truncate(10);
        assert!(answer(&truncated, peer).is_none());
    }
}
