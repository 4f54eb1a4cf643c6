//! `--dtype auto|bf16|f16|f32`: the element type of a checkpoint's dense weights and of the
//! paged KV cache on the candle path. Quantized weights (GGUF Q8_0/Q4_K/Q6_K, `--quantize`)
//! stay packed whatever it says; activations, norms and softmax stay f32.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelDtype {
    /// The checkpoint's own half precision on a GPU (bf16 safetensors stay bf16), f32 on the
    /// CPU, where candle's half-precision matmuls are slower than f32.
    #[default]
    Auto,
    Bf16,
    F16,
    F32,
}

impl FromStr for ModelDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "f32" | "fp32" | "float32" | "float" => Ok(Self::F32),
            other => Err(format!("`{other}` is not one of auto, bf16, f16, f32")),
        }
    }
}

impl fmt::Display for ModelDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::F32 => "f32",
        })
    }
}

impl ModelDtype {
    /// The type dense weights stored as `stored` take on `device`.
    pub fn weights(self, stored: DType, device: &Device) -> DType {
        match self {
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
            Self::F32 => DType::F32,
            Self::Auto if device.is_cpu() => DType::F32,
            Self::Auto => match stored {
                DType::BF16 | DType::F16 => stored,
                _ => DType::F32,
            },
        }
    }

    /// The type of the paged KV cache on `device`: bf16 on a GPU unless a type is asked for.
    pub fn kv_cache(self, device: &Device) -> DType {
        match self {
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
            Self::F32 => DType::F32,
            Self::Auto if device.is_cpu() => DType::F32,
            Self::Auto => DType::BF16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_round_trip() {
        for d in [ModelDtype::Auto, ModelDtype::Bf16, ModelDtype::F16, ModelDtype::F32] {
            assert_eq!(d.to_string().parse::<ModelDtype>(), Ok(d));
        }
        assert_eq!("BF16".parse::<ModelDtype>(), Ok(ModelDtype::Bf16));
        assert!("int8".parse::<ModelDtype>().unwrap_err().contains("auto, bf16, f16, f32"));
    }

    #[test]
    fn auto_computes_in_f32_on_the_cpu_and_an_explicit_type_wins() {
        let cpu = Device::Cpu;
        assert_eq!(ModelDtype::Auto.weights(DType::BF16, &cpu), DType::F32);
        assert_eq!(ModelDtype::Auto.kv_cache(&cpu), DType::F32);
        assert_eq!(ModelDtype::Bf16.weights(DType::F32, &cpu), DType::BF16);
        assert_eq!(ModelDtype::F16.kv_cache(&cpu), DType::F16);
    }
}
