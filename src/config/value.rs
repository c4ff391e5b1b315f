//! How one environment variable's text becomes a typed value, and how that value is shown in
//! `check-config`. A type decides both, so a secret type cannot be printed by mistake.

/// A value read from one environment variable.
pub trait EnvValue: Sized {
    /// Parses the raw text; the error says what is wrong (the caller prefixes the variable).
    fn parse(raw: &str) -> Result<Self, String>;
    /// The text `check-config` prints.
    fn render(&self) -> String;
}

macro_rules! numeric {
    ($($ty:ty),+) => {$(
        impl EnvValue for $ty {
            fn parse(raw: &str) -> Result<Self, String> {
                raw.trim()
                    .parse()
                    .map_err(|e| format!("{raw:?} is not a valid {} ({e})", stringify!($ty)))
            }
            fn render(&self) -> String {
                self.to_string()
            }
        }
    )+};
}
numeric!(u16, u32, u64, usize, f64);

impl EnvValue for bool {
    fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" | "" => Ok(false),
            other => Err(format!("{other:?} is not true or false")),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl EnvValue for String {
    fn parse(raw: &str) -> Result<Self, String> {
        Ok(raw.to_owned())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

/// Unset and empty are the same: "not configured".
impl<T: EnvValue> EnvValue for Option<T> {
    fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            Ok(None)
        } else {
            T::parse(raw).map(Some)
        }
    }
    fn render(&self) -> String {
        self.as_ref().map_or_else(|| "<unset>".into(), T::render)
    }
}

/// A secret string, held in a `secrecy` box: zeroed on drop, `Debug` prints no content, and
/// `check-config` shows `<redacted>`.
pub type Secret = secrecy::SecretString;

impl EnvValue for Secret {
    fn parse(raw: &str) -> Result<Self, String> {
        Ok(Secret::from(raw))
    }
    fn render(&self) -> String {
        use secrecy::ExposeSecret;
        if self.expose_secret().is_empty() {
            "<unset>".into()
        } else {
            "<redacted>".into()
        }
    }
}

/// A Redis URL: it may carry a password, so it prints with the password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl EnvValue for RedisUrl {
    fn parse(raw: &str) -> Result<Self, String> {
        Ok(Self(raw.trim().to_owned()))
    }
    fn render(&self) -> String {
        // scheme://[user[:password]@]host...: keep the user, hide the password.
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "<redacted>".into();
        };
        match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                format!("{scheme}://{user}:***@{host}")
            }
            None => self.0.clone(),
        }
    }
}

/// Enum variables parse from their documented spelling; the error lists the choices.
macro_rules! env_enum {
    ($(#[$meta:meta])* $vis:vis enum $ty:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $ty { $($(#[$vmeta])* $variant),+ }

        impl $ty {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl $crate::config::value::EnvValue for $ty {
            fn parse(raw: &str) -> Result<Self, String> {
                match raw.trim() {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        concat!("unknown value {:?}; expected one of: ", $($text, " "),+),
                        other
                    )),
                }
            }
            fn render(&self) -> String {
                self.as_str().to_owned()
            }
        }
    };
}
pub(crate) use env_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_values_treat_empty_as_unset() {
        assert_eq!(Option::<u16>::parse(" ").expect("empty"), None);
        assert_eq!(Option::<u16>::parse("9731").expect("port"), Some(9731));
        assert!(Option::<u16>::parse("x").is_err());
        assert_eq!(Option::<u16>::None.render(), "<unset>");
    }

    #[test]
    fn redis_urls_render_without_their_password() {
        let url = RedisUrl::parse("rediss://app:s3cr3t-pw@redis:6380/0").expect("url");
        assert_eq!(url.render(), "rediss://app:***@redis:6380/0");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        let url = RedisUrl::parse("redis://redis:6379").expect("url");
        assert_eq!(url.render(), "redis://redis:6379");
    }

    #[test]
    fn secrets_never_render() {
        let s = Secret::parse("hunter2-hunter2").expect("secret");
        assert_eq!(s.render(), "<redacted>");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            Option::<Secret>::parse("hunter2-hunter2")
                .expect("set")
                .render(),
            "<redacted>"
        );
        assert_eq!(Secret::parse("").expect("empty").render(), "<unset>");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Every reader a number or option variable uses, on the same text.
        fn parse_all(raw: &str) {
            let _ = u16::parse(raw);
            let _ = u32::parse(raw);
            let _ = u64::parse(raw);
            let _ = usize::parse(raw);
            let _ = f64::parse(raw);
            let _ = bool::parse(raw);
            let _ = Option::<u16>::parse(raw);
            let _ = Option::<u64>::parse(raw);
            let _ = Option::<f64>::parse(raw);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_text_parses_or_says_why(raw: String) {
                parse_all(&raw);
                if let Err(message) = u64::parse(&raw) {
                    let quoted = format!("{raw:?}");
                    prop_assert!(message.contains(&quoted));
                }
                prop_assert_eq!(Option::<u32>::parse(&raw).ok() == Some(None), raw.trim().is_empty());
            }

            #[test]
            fn numbers_parse_with_surrounding_whitespace(
                n: u64,
                x in any::<f64>().prop_filter("finite", |x| x.is_finite()),
                before in "[ \t]{0,3}",
                after in "[ \t\r\n]{0,3}",
            ) {
                let text = format!("{before}{n}{after}");
                parse_all(&text);
                prop_assert_eq!(u64::parse(&text), Ok(n));
                prop_assert_eq!(Option::<u64>::parse(&text), Ok(Some(n)));
                prop_assert_eq!(u16::parse(&text).is_ok(), n <= u64::from(u16::MAX));
                prop_assert_eq!(f64::parse(&format!("{before}{x}{after}")), Ok(x));
            }
        }
    }
}
