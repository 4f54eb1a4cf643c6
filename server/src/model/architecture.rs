//! The model architectures the server loads, by the names checkpoints use for them
//! (GGUF `general.architecture`, Hugging Face `config.json` `model_type`).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Gemma3,
}

impl Architecture {
    /// The checkpoint's own name (also the prefix of its GGUF metadata keys).
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Gemma3 => "gemma3",
        }
    }

    /// The llama family: one implementation (`model::llama`, the native kernels) serves them.
    pub fn is_llama_family(self) -> bool {
        matches!(self, Architecture::Llama | Architecture::Mistral | Architecture::Qwen2)
    }
}

impl FromStr for Architecture {
    type Err = String;

    /// An unknown name is an error naming it (callers add what they support).
    fn from_str(name: &str) -> Result<Self, String> {
        [Architecture::Llama, Architecture::Mistral, Architecture::Qwen2, Architecture::Gemma3]
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| format!("`{name}`"))
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for a in [Architecture::Llama, Architecture::Mistral, Architecture::Qwen2, Architecture::Gemma3] {
            assert_eq!(a.name().parse::<Architecture>(), Ok(a));
        }
        assert_eq!("phi3".parse::<Architecture>(), Err("`phi3`".to_string()));
        assert!(!Architecture::Gemma3.is_llama_family() && Architecture::Qwen2.is_llama_family());
    }
}
