//! Rejected m-sections of an offer, answered the way every browser accepts.
//!
//! A section is rejected when the offer gives it port 0 (a stopped transceiver: Chromium
//! offers `m=video 0 … a=mid:1 a=inactive` and leaves the mid out of its BUNDLE group), or
//! when it is audio or video without a codec this host decodes. JSEP (RFC 8829 5.3.1) wants
//! the answer's section then to have port 0 and its mid out of the answer's BUNDLE group;
//! Chromium refuses the whole answer when the mid is in the group, so nothing of the call
//! would flow. webrtcbin 1.22 looks at codecs only: it answers a port-0 section it has a
//! transceiver for with port 9 and puts its mid in BUNDLE, and one without a common codec
//! with a new receive-only transceiver, whose media then fails to decode.
//!
//! So webrtcbin gets the offer with each rejected section changed into one it rejects
//! whatever its transceivers ([`offer_for_webrtcbin`]: a media type it does not know, its
//! mid out of BUNDLE, the ICE and DTLS attributes webrtcbin checks every section for), and
//! the answer that goes to the peer gets every port-0 section made clean again
//! ([`clean_answer`]: the offered media type, port 0, `a=inactive`, its mid, no bitrate
//! lines, no ICE/DTLS/SSRC attributes, out of BUNDLE).

use gst_sdp::{SDPMessage, SDPMessageRef};

use crate::sdp_direction::Direction;

/// The media type webrtcbin is shown for a rejected section: one it does not know, which it
/// always rejects.
const REJECTED_MEDIA: &str = "x-wilddog-rejected";

/// Why a section is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Offered with port 0.
    PortZero,
    /// Audio or video with no codec this host decodes (under a payload type RTP can carry).
    NoCodec,
}

/// A rejected section of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its index among the offer's m-sections.
    pub index: u32,
    /// Its `a=mid`, if any.
    pub mid: Option<String>,
    /// Its media type (`video`, `audio`, …).
    pub media: String,
    /// Why.
    pub reason: Reason,
}

/// The sections of `offer` to reject: port 0 (but a bundle-only section of the BUNDLE
/// group, which has port 0 too: webrtcbin and Firefox offer every section but the first so),
/// or audio/video of which `decodes(media, encoding name)` accepts no `a=rtpmap` codec with a
/// payload type of 0..=127.
pub fn rejected_sections(
    offer: &SDPMessageRef,
    decodes: impl Fn(&str, &str) -> bool,
) -> Vec<Rejected> {
    let bundle = bundle_mids(offer);
    let mut out = Vec::new();
    for (index, m) in offer.medias().enumerate() {
        let media = m.media().unwrap_or("").to_owned();
        let bundle_only = m.attributes().any(|a| a.key() == "bundle-only")
            && m.attribute_val("mid").is_some_and(|mid| bundle.iter().any(|b| b == mid));
        let reason = if m.port() == 0 && !bundle_only {
            Some(Reason::PortZero)
        } else if matches!(media.as_str(), "audio" | "video") {
            // A codec under a payload type RTP cannot carry (over 127) is no codec at all.
            let any = m.attributes().filter(|a| a.key() == "rtpmap").any(|a| {
                a.value()
                    .and_then(|v| v.split_once(' '))
                    .filter(|(pt, _)| crate::media::rtp_payload_type(pt).is_some())
                    .map(|(_, enc)| enc.split('/').next().unwrap_or(""))
                    .is_some_and(|enc| decodes(&media, enc))
            });
            (!any).then_some(Reason::NoCodec)
        } else {
            None
        };
        if let Some(reason) = reason {
            out.push(Rejected {
                index: index as u32,
                mid: m.attribute_val("mid").map(str::to_owned),
                media,
                reason,
            });
        }
    }
    out
}

/// The offer as webrtcbin must see it so that it rejects exactly `rejected`.
pub fn offer_for_webrtcbin(offer: &SDPMessageRef, rejected: &[Rejected]) -> SDPMessage {
    let mut msg = offer.to_owned();
    if rejected.is_empty() {
        return msg;
    }
    // ICE and DTLS attributes of a section that stays: webrtcbin checks every section for
    // them (and that the fingerprints agree), and takes the remote ICE credentials from
    // every section (so they must agree). webrtcbin copies a rejected section into its
    // answer, the peer's fingerprint with it: [`own_fingerprint_in_rejected`] fixes that.
    let keep = offer
        .medias()
        .enumerate()
        .find(|(i, _)| !rejected.iter().any(|r| r.index == *i as u32))
        .map(|(_, m)| m);
    let borrowed: Vec<(String, String)> = ["ice-ufrag", "ice-pwd", "setup", "fingerprint"]
        .iter()
        .filter_map(|k| {
            let v = keep.and_then(|m| m.attribute_val(k)).or_else(|| offer.attribute_val(k))?;
            Some((k.to_string(), v.to_owned()))
        })
        .collect();
    for r in rejected {
        let Some(m) = msg.media_mut(r.index) else { continue };
        m.set_media(REJECTED_MEDIA);
        m.set_port_info(0, 0);
        let remove = |m: &mut gst_sdp::SDPMediaRef, key: &str| {
            while let Some(i) =
                (0..m.attributes_len()).find(|&i| m.attribute(i).is_some_and(|a| a.key() == key))
            {
                if m.remove_attribute(i).is_err() {
                    break;
                }
            }
        };
        for (key, value) in &borrowed {
            remove(m, key);
            m.add_attribute(key, Some(value));
        }
    }
    remove_from_bundle(&mut msg, rejected.iter().filter_map(|r| r.mid.as_deref()));
    msg
}

/// The peer's answer as webrtcbin 1.22 can set it (as caller). A rejected section (port 0,
/// out of BUNDLE) needs no transport by JSEP and usually has none (`m=video 0`, `c=`,
/// `a=mid`, `a=inactive`: what Chromium and our own answerer send), but webrtcbin checks
/// every section for `a=fingerprint`, `a=setup` and ICE credentials and refuses the whole
/// answer without them ("No fingerprint lines in sdp for media 0"); and when the rejected
/// section is the first of our BUNDLE group, the one whose transport webrtcbin gathered on,
/// an answer that moves the group to another section leaves webrtcbin without a working
/// transport (ICE fails). So webrtcbin is shown each rejected section as an inactive
/// section of the bundle (port 9, `a=inactive`, the transport attributes of the session or
/// of the first section that stays, its mid back in the BUNDLE group in m-line order): it
/// sends and receives nothing there, as a rejection means. Returns the indexes changed.
pub fn answer_for_webrtcbin(answer: &mut SDPMessageRef, offer: &SDPMessageRef) -> Vec<u32> {
    let keep = answer.medias().find(|m| m.port() != 0);
    let borrowed: Vec<(&str, String)> = ["fingerprint", "setup", "ice-ufrag", "ice-pwd"]
        .into_iter()
        .filter_map(|k| {
            let v = answer.attribute_val(k).or_else(|| keep?.attribute_val(k))?;
            Some((k, v.to_owned()))
        })
        .collect();
    if borrowed.is_empty() {
        // Nothing to borrow from: webrtcbin refuses the answer, which ends the call.
        return Vec::new();
    }
    let mut changed = Vec::new();
    for (index, m) in answer.medias_mut().enumerate() {
        if m.port() != 0
            || m.attributes().any(|a| a.key() == "bundle-only")
            || m.attribute_val("mid").is_none()
        {
            continue;
        }
        m.set_port_info(9, 0);
        // The codecs we offered there (webrtcbin wants a codec for every format).
        if let Some(offered) = offer.media(index as u32) {
            while m.formats_len() > 0 {
                if m.remove_format(0).is_err() {
                    break;
                }
            }
            for format in offered.formats() {
                m.add_format(format);
            }
            for a in offered.attributes() {
                if matches!(a.key(), "rtpmap" | "fmtp") && m.attribute_val(a.key()).is_none() {
                    m.add_attribute(a.key(), a.value());
                }
            }
        }
        for (key, value) in &borrowed {
            if m.attribute_val(key).is_none() {
                m.add_attribute(key, Some(value));
            }
        }
        for i in (0..m.attributes_len()).rev() {
            let direction = m.attribute(i).and_then(|a| Direction::from_attribute(a.key()));
            // `inactive` stays: it is what the rejected section says (added below if absent).
            if direction.is_some_and(|d| d != Direction::Inactive) {
                let _ = m.remove_attribute(i);
            }
        }
        for key in ["inactive", "rtcp-mux"] {
            if !m.attributes().any(|a| a.key() == key) {
                // An empty value, as parsing gives a flag: webrtcbin reads every value as
                // text (a NULL one crashed gst_sdp_media_attributes_to_caps).
                m.add_attribute(key, Some(""));
            }
        }
        changed.push(index as u32);
    }
    if !changed.is_empty() && !bundle_mids(answer).is_empty() {
        let mids: Vec<String> = answer
            .medias()
            .filter(|m| m.port() != 0)
            .filter_map(|m| m.attribute_val("mid").map(str::to_owned))
            .collect();
        for i in (0..answer.attributes_len()).rev() {
            let bundle = answer.attribute(i).is_some_and(|a| {
                a.key() == "group" && a.value().is_some_and(|v| v.starts_with("BUNDLE"))
            });
            if bundle {
                let _ = answer.remove_attribute(i);
            }
        }
        answer.add_attribute("group", Some(&format!("BUNDLE {}", mids.join(" "))));
    }
    changed
}

/// webrtcbin's answer as it must set it: its rejected sections (copies of the offer's) carry
/// the peer's fingerprint, and webrtcbin refuses a description whose fingerprints differ.
/// They get the fingerprint of its first other section.
pub fn own_fingerprint_in_rejected(answer: &mut SDPMessageRef) {
    let ours = answer
        .medias()
        .find(|m| m.port() != 0)
        .and_then(|m| m.attribute_val("fingerprint"))
        .map(str::to_owned);
    let Some(ours) = ours else { return };
    for m in answer.medias_mut() {
        if m.port() != 0 {
            continue;
        }
        for i in 0..m.attributes_len() {
            if m.attribute(i).is_some_and(|a| a.key() == "fingerprint") {
                let _ =
                    m.replace_attribute(i, gst_sdp::SDPAttribute::new("fingerprint", Some(&ours)));
            }
        }
    }
}

/// Makes every port-0 section of an answer to `offer` a clean rejection: the offer's media
/// type and formats, port 0, `a=mid` and `a=inactive` only, no bitrate lines; and takes the
/// mids of these sections out of the answer's BUNDLE group. Returns the rejected mids.
pub fn clean_answer(answer: &mut SDPMessageRef, offer: &SDPMessageRef) -> Vec<String> {
    let mut mids = Vec::new();
    for (index, m) in answer.medias_mut().enumerate() {
        if m.port() != 0 || m.attributes().any(|a| a.key() == "bundle-only") {
            continue;
        }
        let offered = offer.medias().nth(index);
        let media = offered.and_then(|o| o.media()).or(m.media()).unwrap_or("audio").to_owned();
        let mid =
            m.attribute_val("mid").or_else(|| offered?.attribute_val("mid")).map(str::to_owned);
        m.set_media(&media);
        if m.formats_len() == 0 {
            let format = offered.and_then(|o| o.format(0)).unwrap_or("0").to_owned();
            m.add_format(&format);
        }
        while m.attributes_len() > 0 {
            if m.remove_attribute(m.attributes_len() - 1).is_err() {
                break;
            }
        }
        while m.bandwidths_len() > 0 {
            if m.remove_bandwidth(m.bandwidths_len() - 1).is_err() {
                break;
            }
        }
        if let Some(mid) = &mid {
            m.add_attribute("mid", Some(mid));
            mids.push(mid.clone());
        }
        m.add_attribute("inactive", None);
    }
    remove_from_bundle(answer, mids.iter().map(String::as_str));
    mids
}

/// The mids of the `a=group:BUNDLE` lines.
fn bundle_mids(msg: &SDPMessageRef) -> Vec<String> {
    msg.attributes()
        .filter(|a| a.key() == "group")
        .filter_map(|a| a.value()?.strip_prefix("BUNDLE").map(str::to_owned))
        .flat_map(|m| m.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Takes `mids` out of every `a=group:BUNDLE` line (a group left empty goes).
fn remove_from_bundle<'a>(msg: &mut SDPMessageRef, mids: impl Iterator<Item = &'a str> + Clone) {
    for i in (0..msg.attributes_len()).rev() {
        let Some(attr) = msg.attribute(i) else { continue };
        if attr.key() != "group" {
            continue;
        }
        let Some(members) = attr.value().and_then(|v| v.strip_prefix("BUNDLE")) else { continue };
        let kept: Vec<&str> =
            members.split_whitespace().filter(|m| !mids.clone().any(|r| r == *m)).collect();
        let value = format!("BUNDLE {}", kept.join(" "));
        if kept.is_empty() {
            let _ = msg.remove_attribute(i);
        } else {
            let _ = msg.replace_attribute(i, gst_sdp::SDPAttribute::new("group", Some(&value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chromium's (and our own) answer with a rejected video section: no fingerprint there.
    #[test]
    fn rejected_answer_section_is_shown_to_webrtcbin_as_an_inactive_bundled_one() {
        let text = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 1\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=inactive\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:u\r\n\
            a=ice-pwd:pppppppppppppppppppppp\r\na=fingerprint:sha-256 AA\r\na=setup:active\r\n\
            a=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";
        gst::init().unwrap();
        let mut msg = SDPMessage::parse_buffer(text.as_bytes()).unwrap();
        // Our offer: the codecs the rejected section gets.
        let offer = SDPMessage::parse_buffer(
            text.replace("a=inactive\r\n", "a=sendrecv\r\na=rtpmap:96 VP8/90000\r\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(answer_for_webrtcbin(&mut msg, &offer), vec![0]);
        let video = msg.media(0).unwrap();
        assert_eq!(video.port(), 9);
        assert_eq!(bundle_mids(&msg), vec!["0", "1"]);
        assert_eq!(video.attribute_val("fingerprint"), Some("sha-256 AA"));
        assert_eq!(video.attribute_val("setup"), Some("active"));
        assert_eq!(video.attribute_val("ice-ufrag"), Some("u"));
        assert!(video.attributes().any(|a| a.key() == "inactive"));
        assert!(!video.attributes().any(|a| a.key() == "sendrecv"));
        assert_eq!(video.attribute_val("rtpmap"), Some("96 VP8/90000"));
        // Nothing to add a second time.
        assert!(answer_for_webrtcbin(&mut msg, &offer).is_empty());
    }

    /// Chromium 156's offer with a stopped video transceiver (port 0, out of BUNDLE).
    pub(crate) const CHROMIUM_STOPPED_VIDEO: &str = "v=0\r\no=- 4611731400430051336 3 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\nb=AS:64\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:Hs2L\r\na=ice-pwd:hbmNYtiy0rYpzLtB1hxDvkUS\r\na=ice-options:trickle\r\n\
        a=fingerprint:sha-256 8C:71:B1:5E:2F:0E:5F:3A:6C:36:4B:1F:6C:E4:04:5C:39:E5:9F:2A:19:D8:5A:3B:2C:0E:28:1F:72:A8:46:1B\r\n\
        a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=msid:- 7d0e1d4f-0c7a-4a3a-9b6f-1c3b5b0c2f4e\r\na=rtcp-mux\r\n\
        a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=ssrc:1001 cname:abc\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:500\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
        a=mid:1\r\na=inactive\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n";

    /// An offer whose video has only codecs nothing here decodes.
    const UNDECODABLE_VIDEO: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE v a\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 45\r\nc=IN IP4 0.0.0.0\r\nb=AS:1000\r\na=ice-ufrag:u\r\na=ice-pwd:pppppppppppppppppppppp\r\n\
        a=fingerprint:sha-256 AA\r\na=setup:actpass\r\na=mid:v\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:45 AV1/90000\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:u\r\na=ice-pwd:pppppppppppppppppppppp\r\n\
        a=fingerprint:sha-256 AA\r\na=setup:actpass\r\na=mid:a\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

    fn parse(s: &str) -> SDPMessage {
        SDPMessage::parse_buffer(s.as_bytes()).unwrap()
    }

    fn ours(media: &str, enc: &str) -> bool {
        match media {
            "video" => ["VP8", "VP9", "H264"].iter().any(|e| e.eq_ignore_ascii_case(enc)),
            "audio" => enc.eq_ignore_ascii_case("opus"),
            _ => false,
        }
    }

    #[test]
    fn finds_port_zero_and_undecodable_sections() {
        gst::init().unwrap();
        let r = rejected_sections(&parse(CHROMIUM_STOPPED_VIDEO), ours);
        assert_eq!(
            r,
            vec![Rejected {
                index: 1,
                mid: Some("1".into()),
                media: "video".into(),
                reason: Reason::PortZero
            }]
        );
        let r = rejected_sections(&parse(UNDECODABLE_VIDEO), ours);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].index, r[0].reason), (0, Reason::NoCodec));
    }

    #[test]
    fn a_codec_under_a_payload_type_over_127_is_no_codec() {
        gst::init().unwrap();
        let pt300 = UNDECODABLE_VIDEO
            .replace("SAVPF 45\r\n", "SAVPF 300\r\n")
            .replace("a=rtpmap:45 AV1/90000", "a=rtpmap:300 VP8/90000");
        assert!(pt300.contains("a=rtpmap:300 VP8/90000"), "{pt300}");
        let r = rejected_sections(&parse(&pt300), ours);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!((r[0].index, r[0].reason), (0, Reason::NoCodec));
    }

    #[test]
    fn bundle_only_sections_are_not_rejected() {
        gst::init().unwrap();
        // webrtcbin's own offer (max-bundle): the second section has port 0 and bundle-only.
        let offer = parse(
            "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE video0 audio1\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:video0\r\na=rtpmap:96 VP8/90000\r\n\
             m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=bundle-only\r\na=mid:audio1\r\n\
             a=rtpmap:111 OPUS/48000/2\r\n",
        );
        assert!(rejected_sections(&offer, ours).is_empty());
    }

    #[test]
    fn webrtcbin_sees_rejected_sections_it_cannot_take() {
        gst::init().unwrap();
        let offer = parse(UNDECODABLE_VIDEO);
        let r = rejected_sections(&offer, ours);
        let text = offer_for_webrtcbin(&offer, &r).as_text().unwrap();
        assert!(text.contains("a=group:BUNDLE a\r\n"), "{text}");
        assert!(text.contains("m=x-wilddog-rejected 0 UDP/TLS/RTP/SAVPF 45\r\n"), "{text}");
        let stopped = parse(CHROMIUM_STOPPED_VIDEO);
        let r = rejected_sections(&stopped, ours);
        let text = offer_for_webrtcbin(&stopped, &r).as_text().unwrap();
        let video = text.split("m=x-wilddog-rejected").nth(1).unwrap();
        // Chromium's stopped section has no ICE/DTLS attributes; webrtcbin needs them.
        assert!(video.contains("a=ice-ufrag:Hs2L"), "{text}");
        assert!(video.contains("a=setup:actpass"), "{text}");
        assert!(video.contains("a=fingerprint:sha-256 8C:71"), "{text}");
        assert!(text.contains("a=group:BUNDLE 0\r\n"));
        let undecodable = parse(UNDECODABLE_VIDEO);
        let r = rejected_sections(&undecodable, ours);
        let text = offer_for_webrtcbin(&undecodable, &r).as_text().unwrap();
        let video =
            text.split("m=x-wilddog-rejected").nth(1).unwrap().split("m=audio").next().unwrap();
        assert!(video.contains("a=fingerprint:sha-256 AA"), "{text}");
    }

    #[test]
    fn answers_rejected_sections_cleanly() {
        gst::init().unwrap();
        let offer = parse(CHROMIUM_STOPPED_VIDEO);
        // What webrtcbin 1.22 answered (port 0 from its rejection, a copy of the offer).
        let mut answer = parse(
            "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\n\
             a=mid:0\r\na=sendrecv\r\na=rtpmap:111 OPUS/48000/2\r\n\
             m=x-wilddog-rejected 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:500\r\n\
             a=ice-ufrag:Hs2L\r\na=setup:actpass\r\na=mid:1\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n",
        );
        let mids = clean_answer(&mut answer, &offer);
        assert_eq!(mids, vec!["1".to_owned()]);
        let text = answer.as_text().unwrap();
        assert!(text.contains("a=group:BUNDLE 0\r\n"), "{text}");
        let video = text.split("m=video").nth(1).expect("media type restored");
        assert!(video.starts_with(" 0 UDP/TLS/RTP/SAVPF 96\r\n"), "{video}");
        assert!(!video.contains("b=AS"), "{video}");
        assert!(video.contains("a=mid:1\r\na=inactive\r\n"), "{video}");
        assert!(!video.contains("sendrecv") && !video.contains("ice-ufrag"), "{video}");
        assert!(text.contains("m=audio 9"), "the rest is kept: {text}");
    }
}
