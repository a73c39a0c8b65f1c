//! The admin CLI `raidfs`: one module per command; each parses nothing
//! itself (clap does) and calls the engine.

pub mod add_spare;
pub mod create;
pub mod debug;
pub mod extract;
pub mod fail;
pub mod progress;
pub mod readonly;
pub mod remove;
pub mod remove_spare;
pub mod replace;
pub mod scrub;
pub mod status;
pub mod target;

/// Parse a size such as `64K`, `1M`, `65536`.
pub fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1u64 << 20),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 64K, 1M)"))?;
    u32::try_from(n * mult).map_err(|_| format!("{s} is too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("64K"), Ok(65536));
        assert_eq!(super::parse_size("1m"), Ok(1 << 20));
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert!(super::parse_size("x").is_err());
        assert!(super::parse_size("8192M").is_err());
    }
}
