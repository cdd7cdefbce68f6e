//! The direction of an m-section (RFC 8866 6.7, RFC 3264 5.1): one reading of `a=sendrecv`,
//! `a=sendonly`, `a=recvonly` and `a=inactive` for every place that asks whether a section
//! sends or receives. A section without its own direction attribute takes the session's, and
//! a description without any is `sendrecv`.

use gst_sdp::{SDPMediaRef, SDPMessageRef};

/// An m-section's direction, as seen by the side that wrote the description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an attribute named `key` states, if it is a direction attribute.
    pub fn from_attribute(key: &str) -> Option<Direction> {
        match key {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The session-level direction of `sdp`: `sendrecv` when it states none.
    pub fn of_session(sdp: &SDPMessageRef) -> Direction {
        sdp.attributes()
            .find_map(|a| Direction::from_attribute(a.key()))
            .unwrap_or(Direction::SendRecv)
    }

    /// The direction of section `m`, whose description's session-level direction is
    /// `session` ([`Direction::of_session`]). The section's port is not looked at: a
    /// rejected section (port 0) is for the caller to leave out.
    pub fn of_media(m: &SDPMediaRef, session: Direction) -> Direction {
        m.attributes().find_map(|a| Direction::from_attribute(a.key())).unwrap_or(session)
    }

    /// The attribute that states this direction.
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the writer of the description sends media in such a section.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer of the description receives media in such a section.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Makes the sections of media type `media` (`video`, `audio`) that `sdp` says it sends in
/// say it sends nothing: `sendonly` becomes `inactive`, `sendrecv` `recvonly`. Rejected
/// sections (port 0) are left as they are. Whether a section changed.
pub fn stop_sending(sdp: &mut SDPMessageRef, media: &str) -> bool {
    let session = Direction::of_session(sdp);
    let mut changed = false;
    for m in sdp.medias_mut() {
        if m.media() != Some(media) || m.port() == 0 {
            continue;
        }
        let now = Direction::of_media(m, session);
        let then = match now {
            Direction::SendRecv => Direction::RecvOnly,
            Direction::SendOnly => Direction::Inactive,
            Direction::RecvOnly | Direction::Inactive => continue,
        };
        let own = m.attributes().position(|a| Direction::from_attribute(a.key()).is_some());
        if let Some(at) = own.and_then(|at| u32::try_from(at).ok()) {
            let _ = m.remove_attribute(at);
        }
        // An empty value, as parsing gives a flag: webrtcbin reads every value as text (a
        // NULL one crashes gst_sdp_media_attributes_to_caps).
        m.add_attribute(then.attribute(), Some(""));
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> gst_sdp::SDPMessage {
        // Each test may run in a process of its own (cargo nextest): none can count on
        // another having initialised GStreamer.
        gst::init().expect("GStreamer initialises");
        gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).expect("valid SDP")
    }

    const HEAD: &str = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";

    #[test]
    fn a_section_takes_its_own_direction_then_the_sessions_then_sendrecv() {
        let sdp = parse(&format!(
            "{HEAD}a=recvonly\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\n"
        ));
        let session = Direction::of_session(&sdp);
        assert_eq!(session, Direction::RecvOnly);
        let directions: Vec<_> = sdp.medias().map(|m| Direction::of_media(m, session)).collect();
        assert_eq!(directions, [Direction::RecvOnly, Direction::SendOnly]);

        let plain = parse(&format!("{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
        let session = Direction::of_session(&plain);
        assert_eq!(session, Direction::SendRecv);
        let audio = plain.medias().next().expect("one section");
        assert_eq!(Direction::of_media(audio, session), Direction::SendRecv);
    }

    #[test]
    fn stop_sending_changes_only_the_sending_sections_of_one_media_type() {
        let mut sdp = parse(&format!(
            "{HEAD}a=sendrecv\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
             a=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n\
             m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:3\r\na=sendonly\r\n"
        ));
        assert!(stop_sending(&mut sdp, "video"));
        let session = Direction::of_session(&sdp);
        let directions: Vec<_> = sdp.medias().map(|m| Direction::of_media(m, session)).collect();
        assert_eq!(
            directions,
            [Direction::Inactive, Direction::SendRecv, Direction::RecvOnly, Direction::SendOnly]
        );
        // One direction attribute per section, the other attributes kept.
        let first = sdp.medias().next().expect("a section");
        let keys: Vec<_> = first.attributes().map(|a| a.key().to_owned()).collect();
        assert_eq!(keys, ["mid", "rtpmap", "inactive"]);
        assert!(!stop_sending(&mut sdp, "video"), "nothing left that sends");
    }

    #[test]
    fn sends_and_receives() {
        let all =
            [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive];
        let table: Vec<_> = all.iter().map(|d| (d.sends(), d.receives())).collect();
        assert_eq!(table, [(true, true), (true, false), (false, true), (false, false)]);
        assert_eq!(Direction::from_attribute("rtcp-mux"), None);
    }
}
