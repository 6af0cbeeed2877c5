//! HTTP header names and values of remote write, and the request-header checks a receiver
//! makes before it touches the body.
//!
//! The Content-Type parser trims optional whitespace around parameters (RFC 9110 allows
//! `application/x-protobuf; proto=…`), which client_golang does not; both the media type and
//! parameter names are case-insensitive, the `proto=` value is not.

use thiserror::Error;

pub const CONTENT_TYPE: &str = "Content-Type";
pub const CONTENT_ENCODING: &str = "Content-Encoding";
pub const USER_AGENT: &str = "User-Agent";
pub const RETRY_AFTER: &str = "Retry-After";
/// Non-standard; Prometheus and client_golang set it to the attempt number on retries.
pub const RETRY_ATTEMPT: &str = "Retry-Attempt";

pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Write-Version";
pub const VERSION_RW1: &str = "0.1.0";
pub const VERSION_RW2: &str = "2.0.0";

pub const SAMPLES_WRITTEN: &str = "X-Prometheus-Remote-Write-Samples-Written";
pub const HISTOGRAMS_WRITTEN: &str = "X-Prometheus-Remote-Write-Histograms-Written";
pub const EXEMPLARS_WRITTEN: &str = "X-Prometheus-Remote-Write-Exemplars-Written";

pub const MEDIA_TYPE: &str = "application/x-protobuf";
/// RW1, the form 1.x receivers and Prometheus' RW1 sender use.
pub const CONTENT_TYPE_RW1: &str = "application/x-protobuf";
/// RW1 with the message named explicitly (allowed by the 2.0 spec).
pub const CONTENT_TYPE_RW1_EXPLICIT: &str = "application/x-protobuf;proto=prometheus.WriteRequest";
pub const CONTENT_TYPE_RW2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
pub const CONTENT_ENCODING_SNAPPY: &str = "snappy";

pub const PROTO_RW1: &str = "prometheus.WriteRequest";
pub const PROTO_RW2: &str = "io.prometheus.write.v2.Request";

/// Headers users must not be able to set on remote-write requests (Prometheus'
/// `reservedHeaders`, lower case). `authorization` is refused separately by configs, which
/// have their own auth sections.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Which protobuf message a request body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteProto {
    /// `prometheus.WriteRequest`
    V1,
    /// `io.prometheus.write.v2.Request`
    V2,
}

impl WriteProto {
    /// The Content-Type a sender puts on a request of this kind.
    pub fn content_type(self) -> &'static str {
        match self {
            WriteProto::V1 => CONTENT_TYPE_RW1,
            WriteProto::V2 => CONTENT_TYPE_RW2,
        }
    }

    /// The `X-Prometheus-Remote-Write-Version` a sender puts on a request of this kind.
    pub fn version(self) -> &'static str {
        match self {
            WriteProto::V1 => VERSION_RW1,
            WriteProto::V2 => VERSION_RW2,
        }
    }

    /// The fully qualified message name, as in `proto=` and in configs' `protobuf_message`.
    pub fn message_name(self) -> &'static str {
        match self {
            WriteProto::V1 => PROTO_RW1,
            WriteProto::V2 => PROTO_RW2,
        }
    }

    /// Parses a `protobuf_message` config value.
    pub fn from_message_name(name: &str) -> Option<Self> {
        match name {
            PROTO_RW1 => Some(WriteProto::V1),
            PROTO_RW2 => Some(WriteProto::V2),
            _ => None,
        }
    }
}

/// Why a Content-Type was refused; every variant maps to HTTP 415.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ContentTypeError {
    #[error("expected {MEDIA_TYPE} as the media type, got {0:?}")]
    UnsupportedMediaType(String),
    #[error("malformed content-type parameter {0:?}: expected key=value")]
    MalformedParameter(String),
    #[error("unknown remote write protobuf message {0:?}; supported: {PROTO_RW1}, {PROTO_RW2}")]
    UnknownProto(String),
}

/// Reads a request's Content-Type. A missing or blank header means RW1, as the specs and
/// Prometheus' receiver treat it.
pub fn parse_content_type(value: Option<&str>) -> Result<WriteProto, ContentTypeError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(WriteProto::V1);
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case(MEDIA_TYPE) {
        return Err(ContentTypeError::UnsupportedMediaType(media.to_owned()));
    }
    let mut proto = WriteProto::V1;
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (key, val) =
            param.split_once('=').ok_or_else(|| ContentTypeError::MalformedParameter(param.to_owned()))?;
        if !key.trim().eq_ignore_ascii_case("proto") {
            continue; // e.g. charset: meaningless for protobuf, harmless.
        }
        let val = val.trim();
        let val = val.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(val);
        proto = WriteProto::from_message_name(val)
            .ok_or_else(|| ContentTypeError::UnknownProto(val.to_owned()))?;
    }
    Ok(proto)
}

/// A Content-Encoding other than snappy; maps to HTTP 415.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0:?} encoding is not accepted; only snappy is")]
pub struct UnsupportedEncoding(pub String);

/// Checks a request's Content-Encoding. A missing header is taken as snappy, like Prometheus.
pub fn check_content_encoding(value: Option<&str>) -> Result<(), UnsupportedEncoding> {
    match value.map(str::trim) {
        None | Some("") => Ok(()),
        Some(v) if v.eq_ignore_ascii_case(CONTENT_ENCODING_SNAPPY) => Ok(()),
        Some(v) => Err(UnsupportedEncoding(v.to_owned())),
    }
}

/// True when `name` (any case) is a header users may not set on remote-write requests.
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let ok = [
            (None, WriteProto::V1),
            (Some(""), WriteProto::V1),
            (Some("application/x-protobuf"), WriteProto::V1),
            (Some("Application/X-Protobuf"), WriteProto::V1),
            (Some(CONTENT_TYPE_RW1_EXPLICIT), WriteProto::V1),
            (Some(CONTENT_TYPE_RW2), WriteProto::V2),
            (Some("application/x-protobuf; proto=io.prometheus.write.v2.Request"), WriteProto::V2),
            (Some("application/x-protobuf ;  proto = io.prometheus.write.v2.Request ;"), WriteProto::V2),
            (Some("application/x-protobuf;proto=\"io.prometheus.write.v2.Request\""), WriteProto::V2),
            (Some("application/x-protobuf;charset=utf-8"), WriteProto::V1),
            (Some("application/x-protobuf;PROTO=io.prometheus.write.v2.Request"), WriteProto::V2),
        ];
        for (input, want) in ok {
            assert_eq!(parse_content_type(input), Ok(want), "{input:?}");
        }
        assert!(matches!(
            parse_content_type(Some("application/json")),
            Err(ContentTypeError::UnsupportedMediaType(m)) if m == "application/json"
        ));
        assert!(matches!(parse_content_type(Some("yolo")), Err(ContentTypeError::UnsupportedMediaType(_))));
        assert!(matches!(
            parse_content_type(Some("application/x-protobuf;proto=yolo")),
            Err(ContentTypeError::UnknownProto(p)) if p == "yolo"
        ));
        assert!(matches!(
            parse_content_type(Some("application/x-protobuf;proto")),
            Err(ContentTypeError::MalformedParameter(_))
        ));
        // The message name is case-sensitive, like protobuf names.
        assert!(parse_content_type(Some("application/x-protobuf;proto=Prometheus.WriteRequest")).is_err());
    }

    #[test]
    fn encodings() {
        assert!(check_content_encoding(None).is_ok());
        assert!(check_content_encoding(Some("snappy")).is_ok());
        assert!(check_content_encoding(Some(" Snappy ")).is_ok());
        assert_eq!(check_content_encoding(Some("gzip")), Err(UnsupportedEncoding("gzip".into())));
        assert!(check_content_encoding(Some("zstd")).is_err());
    }

    #[test]
    fn sender_headers_per_version() {
        assert_eq!(WriteProto::V1.content_type(), "application/x-protobuf");
        assert_eq!(WriteProto::V1.version(), "0.1.0");
        assert_eq!(WriteProto::V2.version(), "2.0.0");
        for p in [WriteProto::V1, WriteProto::V2] {
            assert_eq!(parse_content_type(Some(p.content_type())), Ok(p));
            assert_eq!(WriteProto::from_message_name(p.message_name()), Some(p));
        }
    }

    #[test]
    fn reserved_headers() {
        assert!(is_reserved_header("Content-Type"));
        assert!(is_reserved_header("X-Prometheus-Remote-Write-Version"));
        assert!(!is_reserved_header("X-Scope-OrgID"));
    }
}
