//! The DTLS certificate of every peer connection: ECDSA P-256, made when the peer connection
//! is made.
//!
//! RFC 8827 makes ECDSA P-256 the certificate every WebRTC endpoint must support, and
//! several stacks offer nothing but ECDHE-ECDSA cipher suites: with GStreamer's default
//! RSA-2048 certificate their handshake with webrtcbin fails (`no shared cipher`). An ECDSA
//! certificate takes well under a millisecond to make (RSA-2048: ~0.1–0.5 s), so each peer
//! connection gets its own: a peer connection rebuilt for an ICE restart presents a new
//! fingerprint and the peer starts a new DTLS association, as browsers do.
//!
//! webrtcbin 1.22 has no property for its certificate: each of its DTLS transports
//! (`GstWebRTCDTLSTransport`, made lazily while an offer or answer is created) wraps a
//! `dtlssrtpdec` whose `pem` property holds the certificate and key, and the SDP's
//! `a=fingerprint` is read back from it. A `deep-element-added` handler gives every
//! `dtlssrtpdec` added to the webrtcbin our PEM before the fingerprint is read (the
//! transport's bins are added to webrtcbin in the same call that makes them). The cipher
//! list stays GStreamer's (`ALL:!ADH:!LOW:!EXP:!MD5:@STRENGTH`, which with an ECDSA key
//! means the ECDHE-ECDSA suites browsers use).
//!
//! webrtcbin 1.22 computes `a=fingerprint` by base64-decoding every line of that PEM that
//! is not a `-----` marker: with the key in the same text (which `pem` needs) the digest
//! covers the key too and matches no certificate. GStreamer peers never check it; browsers
//! and other stacks do (aiortc: "fingerprint mismatch"). So the SDP we send gets the real
//! fingerprint, the SHA-256 of our certificate's DER ([`set_fingerprints`]).

use std::time::{Duration, SystemTime};

use gst::prelude::*;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    /// Key generation or signing failed.
    #[error("cannot make the DTLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// How long a certificate is valid either side of now: like browsers' (30 days ahead), with
/// a day back for peers whose clock is behind. WebRTC peers check the fingerprint, not the
/// dates, but some stacks refuse an expired certificate.
const VALIDITY_AHEAD: Duration = Duration::from_secs(30 * 24 * 3600);
const VALIDITY_BEHIND: Duration = Duration::from_secs(24 * 3600);

/// A certificate and key for a peer connection.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The certificate, then its private key (PKCS#8), PEM.
    pub pem: String,
    /// `sha-256 AB:CD:…`: the value of `a=fingerprint` for it.
    pub fingerprint: String,
}

/// A fresh self-signed ECDSA P-256 certificate and its private key.
pub fn new_certificate() -> Result<Certificate, DtlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "wilddog-gst");
    let now = SystemTime::now();
    params.not_before = (now - VALIDITY_BEHIND).into();
    params.not_after = (now + VALIDITY_AHEAD).into();
    let cert = params.self_signed(&key)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.der());
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    Ok(Certificate {
        pem: format!("{}{}", cert.pem(), key.serialize_pem()),
        fingerprint: format!("sha-256 {}", hex.join(":")),
    })
}

/// Replaces the value of every `a=fingerprint` (session and media level) of an SDP we send.
pub fn set_fingerprints(sdp: &mut gst_sdp::SDPMessageRef, fingerprint: &str) {
    let attr = || gst_sdp::SDPAttribute::new("fingerprint", Some(fingerprint));
    for i in 0..sdp.attributes_len() {
        if sdp.attribute(i).is_some_and(|a| a.key() == "fingerprint") {
            let _ = sdp.replace_attribute(i, attr());
        }
    }
    for m in sdp.medias_mut() {
        for i in 0..m.attributes_len() {
            if m.attribute(i).is_some_and(|a| a.key() == "fingerprint") {
                let _ = m.replace_attribute(i, attr());
            }
        }
    }
}

/// The PEM text of a fresh certificate and key (see [`new_certificate`]).
pub fn new_certificate_pem() -> Result<String, DtlsError> {
    Ok(new_certificate()?.pem)
}

/// Gives every DTLS transport of `webrtcbin` a new ECDSA P-256 certificate (one per
/// webrtcbin, shared by its transports: with max-bundle there is one). Call before the
/// first offer or answer. Returns the `a=fingerprint` value the SDP we send must carry.
pub fn use_own_certificate(webrtcbin: &gst::Element) -> Result<String, DtlsError> {
    let Certificate { pem, fingerprint } = new_certificate()?;
    let Some(bin) = webrtcbin.downcast_ref::<gst::Bin>() else {
        // Not a webrtcbin: nothing to give the certificate to; its SDP keeps its own.
        return Ok(String::new());
    };
    bin.connect_deep_element_added(move |_, _, element| {
        let is_dtls_dec = element.factory().is_some_and(|f| f.name() == "dtlssrtpdec")
            && element.find_property("pem").is_some();
        if is_dtls_dec {
            element.set_property("pem", &pem);
        }
    });
    Ok(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_ecdsa_p256_with_its_key() {
        let started = std::time::Instant::now();
        let pem = new_certificate_pem().unwrap();
        assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pem.contains("-----BEGIN PRIVATE KEY-----"));
        // id-ecPublicKey + prime256v1 in the DER of the certificate.
        let der = rustls_pki_der(&pem);
        let ec_public_key = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        let p256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(der.windows(ec_public_key.len()).any(|w| w == ec_public_key));
        assert!(der.windows(p256.len()).any(|w| w == p256));
        assert_ne!(pem, new_certificate_pem().unwrap(), "a new key each time");
    }

    #[test]
    fn fingerprint_is_the_certificates_sha256() {
        use std::process::{Command, Stdio};
        let cert = new_certificate().unwrap();
        // What any peer computes: `openssl x509 -fingerprint -sha256` of the certificate.
        let mut child = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(cert.pem.as_bytes()).unwrap();
        let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        let theirs = out.trim().rsplit('=').next().unwrap().to_owned();
        assert_eq!(cert.fingerprint, format!("sha-256 {theirs}"));
        gst::init().unwrap();
        let mut sdp = gst_sdp::SDPMessage::parse_buffer(
            b"v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
              a=fingerprint:sha-256 00:11\r\na=mid:0\r\n",
        )
        .unwrap();
        set_fingerprints(&mut sdp, &cert.fingerprint);
        assert!(
            sdp.as_text().unwrap().contains(&format!("a=fingerprint:{}\r\n", cert.fingerprint))
        );
    }

    fn rustls_pki_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }
}
