//! The link handshake: how a link proves which connection it belongs to before it carries data.
