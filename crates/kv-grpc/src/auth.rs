//! Client authentication: bearer tokens mapped to roles (`--auth-tokens FILE`), checked on
//! every call of the client API. The token file holds one token per line:
//!
//! ```text
//! # role   name        token (at least 16 characters, e.g. `openssl rand -hex 32`)
//! admin    ops-alice   1f0c6a3be1d2c1f1a7b0e59d4cb7e6d1
//! write    checkout    9a4e0c2d7b1f8e3a6c5d4b2a1e0f9c8d
//! read     dashboard   c0ffee00c0ffee00c0ffee00c0ffee00
//! ```
//!
//! Roles nest: `write` may also read, `admin` may do everything. Errors name the token by
//! its name and never echo a secret; the presented token is compared with every known one
//! in constant time.

use std::fmt;
use std::path::Path;

use thiserror::Error;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The shortest secret accepted: shorter ones are guessable.
pub const MIN_TOKEN_BYTES: usize = 16;
/// The longest secret accepted (and the most bytes of a presented token compared).
pub const MAX_TOKEN_BYTES: usize = 512;
/// The most tokens one file may hold: each request is compared with all of them.
pub const MAX_TOKENS: usize = 1024;

/// What a token may do; each role includes the ones before it. `Membership/Health` and
/// `grpc.health.v1` need no token, so probes carry no secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Get, and the read-only views (membership, ring, hints, anti-entropy).
    Read,
    /// Put and Delete, and everything `Read` may do.
    Write,
    /// Ring changes (join, leave, remove, replace), and everything `Write` may do.
    Admin,
}

impl Role {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        })
    }
}

/// Why a token file was refused; the message names the file's line, never a secret.
#[derive(Debug, Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `role name token`, or breaks a rule.
    #[error("token file line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The file holds no token: every request would be refused.
    #[error("the token file holds no token: add lines `role name token`")]
    Empty,
}

/// One known token.
struct Token {
    name: String,
    role: Role,
    secret: Vec<u8>,
}

/// The tokens a node accepts, with their roles.
pub struct TokenTable {
    tokens: Vec<Token>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.tokens.iter().map(|t| (&t.name, t.role)).collect();
        f.debug_struct("TokenTable")
            .field("tokens", &names)
            .finish()
    }
}

/// Who a request turned out to be (borrowed from the table: nothing is allocated per
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The token's name.
    pub name: &'a str,
    /// Its role.
    pub role: Role,
}

impl TokenTable {
    /// Reads and checks a token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses a token file's text: `role name token` per line, `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut tokens: Vec<Token> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let content = line.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let token =
                parse_line(content).map_err(|why| TokenFileError::Line { line: line_no, why })?;
            let clash = tokens
                .iter()
                .find(|t| t.name == token.name || t.secret == token.secret);
            if let Some(other) = clash {
                let why = if other.name == token.name {
                    format!("the name {:?} is used twice", token.name)
                } else {
                    format!("{:?} has the same secret as {:?}", token.name, other.name)
                };
                return Err(TokenFileError::Line { line: line_no, why });
            }
            if tokens.len() == MAX_TOKENS {
                let why = format!("more than {MAX_TOKENS} tokens");
                return Err(TokenFileError::Line { line: line_no, why });
            }
            tokens.push(token);
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Self { tokens })
    }

    /// How many tokens the table holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the table is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller whose secret is `presented`. Every known secret is compared, each in
    /// time that depends only on the lengths, so timing reveals neither which token
    /// matched nor how much of one did.
    pub fn identify(&self, presented: &[u8]) -> Option<Caller<'_>> {
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(&token.secret, presented) {
                found = Some(Caller {
                    name: &token.name,
                    role: token.role,
                });
            }
        }
        found
    }

    /// The caller of a request with `metadata`, if it may make `call`, which needs
    /// `needed`; UNAUTHENTICATED or PERMISSION_DENIED with what is missing otherwise.
    pub fn authorize(
        &self,
        metadata: &MetadataMap,
        call: &str,
        needed: Role,
    ) -> Result<Caller<'_>, Status> {
        let presented = bearer(metadata)?;
        let caller = self.identify(presented).ok_or_else(|| {
            Status::unauthenticated(
                "the bearer token is not one this node accepts (check the token, and \
                 --auth-tokens on the node)",
            )
        })?;
        if caller.role < needed {
            return Err(Status::permission_denied(format!(
                "{call} needs the {needed} role; token {:?} has the {} role",
                caller.name, caller.role
            )));
        }
        Ok(caller)
    }
}

fn parse_line(content: &str) -> Result<Token, String> {
    let fields: Vec<&str> = content.split_whitespace().collect();
    let [role, name, secret] = fields[..] else {
        return Err(format!(
            "expected `role name token`, found {} fields",
            fields.len()
        ));
    };
    let role = Role::parse(role)
        .ok_or_else(|| format!("unknown role {role:?}; use read, write or admin"))?;
    if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&secret.len()) {
        return Err(format!(
            "the token of {name:?} is {} characters; use {MIN_TOKEN_BYTES} to \
             {MAX_TOKEN_BYTES} (e.g. `openssl rand -hex 32`)",
            secret.len()
        ));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the token of {name:?} has characters a header cannot carry; use printable ASCII"
        ));
    }
    Ok(Token {
        name: name.to_owned(),
        role,
        secret: secret.as_bytes().to_vec(),
    })
}

/// The secret of an `authorization: Bearer <token>` header.
fn bearer(metadata: &MetadataMap) -> Result<&[u8], Status> {
    let missing = || {
        Status::unauthenticated(
            "this node requires a token: send the header `authorization: Bearer <token>` \
             (kvstore CLI: --token or KVSTORE_TOKEN)",
        )
    };
    let header = metadata.get("authorization").ok_or_else(missing)?;
    let value = header.as_bytes();
    let scheme = b"bearer ";
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(Status::unauthenticated(
            "the authorization header is not `Bearer <token>`",
        ));
    }
    let secret = value[scheme.len()..].trim_ascii();
    if secret.is_empty() || secret.len() > MAX_TOKEN_BYTES {
        return Err(missing());
    }
    Ok(secret)
}

/// Whether `known == presented`, in time that depends only on their lengths.
fn constant_time_eq(known: &[u8], presented: &[u8]) -> bool {
    let mut difference = u8::from(known.len() != presented.len());
    for (index, byte) in known.iter().enumerate() {
        let other = presented.get(index).copied().unwrap_or(!byte);
        difference |= byte ^ other;
    }
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# role name token
admin ops   aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
write app   bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb  # the checkout service
read  dash  cccccccccccccccccccccccccccccccc
";

    fn with_header(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", value.parse().unwrap());
        metadata
    }

    #[test]
    fn roles_nest() {
        let table = TokenTable::parse(FILE).unwrap();
        let app = with_header("Bearer bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        assert_eq!(
            table.authorize(&app, "Put", Role::Write).unwrap().name,
            "app"
        );
        assert!(table.authorize(&app, "Get", Role::Read).is_ok());
        let denied = table
            .authorize(&app, "ChangeRing", Role::Admin)
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied.message().contains("needs the admin role")
                && denied.message().contains("\"app\" has the write role"),
            "{}",
            denied.message()
        );
        let ops = with_header("bearer aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert!(table.authorize(&ops, "ChangeRing", Role::Admin).is_ok());
    }

    #[test]
    fn missing_and_wrong_tokens_are_unauthenticated_without_echo() {
        let table = TokenTable::parse(FILE).unwrap();
        let none = table
            .authorize(&MetadataMap::new(), "Get", Role::Read)
            .unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        assert!(none.message().contains("authorization: Bearer"));
        let secret = "dddddddddddddddddddddddddddddddd";
        let wrong = table
            .authorize(&with_header(&format!("Bearer {secret}")), "Get", Role::Read)
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(!wrong.message().contains(secret));
        let prefix = table
            .authorize(&with_header("Bearer aaaaaaaaaaaaaaaa"), "Get", Role::Read)
            .unwrap_err();
        assert_eq!(prefix.code(), tonic::Code::Unauthenticated);
        let basic = table
            .authorize(&with_header("Basic dXNlcjpwYXNz"), "Get", Role::Read)
            .unwrap_err();
        assert!(basic.message().contains("not `Bearer <token>`"));
    }

    #[test]
    fn bad_files_name_the_line_and_never_the_secret() {
        let cases = [
            ("owner x aaaaaaaaaaaaaaaaaaaa", "unknown role \"owner\""),
            ("read x short", "is 5 characters"),
            ("read x", "found 2 fields"),
            (
                "read x aaaaaaaaaaaaaaaaaaaa\nread x bbbbbbbbbbbbbbbbbbbb",
                "line 2: the name \"x\" is used twice",
            ),
            (
                "read x aaaaaaaaaaaaaaaaaaaa\nwrite y aaaaaaaaaaaaaaaaaaaa",
                "\"y\" has the same secret as \"x\"",
            ),
            ("# nothing", "holds no token"),
        ];
        for (text, expected) in cases {
            let message = TokenTable::parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(!message.contains("aaaaaaaaaaaaaaaa"), "{message}");
        }
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
