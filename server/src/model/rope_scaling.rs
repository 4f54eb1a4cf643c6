//! Rotary frequency scaling: how a checkpoint stretches its rotary embeddings past the
//! context it was pre-trained on (Llama 3.1+, linear "position interpolation").
//!
//! Everything here is pure: it turns a scaling description into the inverse frequency of
//! each rotary pair, which `RopeTable` turns into cos/sin for both backends.

use std::f64::consts::PI;

use crate::error::{Error, Result};

/// How the inverse frequencies `base^(-2i/dims)` of the rotary pairs are scaled.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RopeScaling {
    /// Unscaled rotary embeddings.
    #[default]
    None,
    /// Positions divided by `factor` (every frequency divided by it).
    Linear { factor: f32 },
    /// Llama 3.1's scheme: long wavelengths divided by `factor`, short ones kept, a smooth
    /// interpolation between the two thresholds `original / low_freq_factor` and
    /// `original / high_freq_factor`.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position_embeddings: usize },
    /// Per-pair frequency divisors, as GGUF's `rope_freqs.weight` stores them (llama.cpp
    /// rotates pair `i` by `theta_i / factors[i]`); GGUF's linear factor is folded in.
    FreqFactors(Vec<f32>),
}

impl RopeScaling {
    /// The scaling a GGUF file describes: `{arch}.rope.scaling.type` (llama.cpp's default is
    /// `linear`), `{arch}.rope.scaling.factor` (or the older `{arch}.rope.scale_linear`; 0 or
    /// absent means 1) and the optional `rope_freqs.weight` divisors.
    pub fn from_gguf(scaling_type: Option<&str>, factor: Option<f32>, freq_factors: Option<Vec<f32>>) -> Result<Self> {
        let factor = match factor {
            Some(f) if f != 0.0 => f,
            _ => 1.0,
        };
        match scaling_type.unwrap_or("linear") {
            "none" | "linear" => {}
            other => {
                return Err(Error::ModelLoad(format!(
                    "GGUF rotary scaling type `{other}` is not supported (supported: none, linear, rope_freqs factors)"
                )))
            }
        }
        if !factor.is_finite() || factor <= 0.0 {
            return Err(Error::ModelLoad(format!("GGUF rotary scaling factor {factor} is not positive")));
        }
        Ok(match freq_factors {
            Some(factors) => {
                if let Some(bad) = factors.iter().find(|f| !f.is_finite() || **f <= 0.0) {
                    return Err(Error::ModelLoad(format!("GGUF rope_freqs.weight holds a non-positive factor {bad}")));
                }
                RopeScaling::FreqFactors(factors.into_iter().map(|f| f * factor).collect())
            }
            None if factor == 1.0 => RopeScaling::None,
            None => RopeScaling::Linear { factor },
        })
    }

    /// The scaling of a config.json `rope_scaling` object (`rope_type`, or the legacy `type`):
    /// `llama3`, `linear`, or `default`/null for none; anything else is refused.
    pub fn from_hf_config(value: Option<&serde_json::Value>) -> Result<Self> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(RopeScaling::None);
        };
        let obj = value
            .as_object()
            .ok_or_else(|| Error::ModelLoad(format!("config.json `rope_scaling` is not an object: {value}")))?;
        let kind = obj.get("rope_type").or_else(|| obj.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
        let number = |key: &str| -> Result<f64> {
            obj.get(key)
                .and_then(|v| v.as_f64())
                .ok_or_else(|| Error::ModelLoad(format!("config.json `rope_scaling` ({kind}) needs a numeric `{key}`")))
        };
        let positive = |key: &str| -> Result<f64> {
            let v = number(key)?;
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(Error::ModelLoad(format!("config.json `rope_scaling.{key}` must be positive, got {v}")))
            }
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear { factor: positive("factor")? as f32 }),
            "llama3" => {
                let scaling = RopeScaling::Llama3 {
                    factor: positive("factor")? as f32,
                    low_freq_factor: positive("low_freq_factor")? as f32,
                    high_freq_factor: positive("high_freq_factor")? as f32,
                    original_max_position_embeddings: positive("original_max_position_embeddings")? as usize,
                };
                if let RopeScaling::Llama3 { low_freq_factor, high_freq_factor, .. } = scaling {
                    if high_freq_factor <= low_freq_factor {
                        return Err(Error::ModelLoad(format!(
                            "config.json `rope_scaling` (llama3): high_freq_factor {high_freq_factor} must exceed low_freq_factor {low_freq_factor}"
                        )));
                    }
                }
                Ok(scaling)
            }
            other => Err(Error::ModelLoad(format!(
                "config.json `rope_scaling` type `{other}` is not supported (supported: default, linear, llama3)"
            ))),
        }
    }

    /// The inverse frequency (radians per position) of each of the `rotary_dims / 2` pairs.
    pub fn inverse_frequencies(&self, rotary_dims: usize, freq_base: f32) -> Result<Vec<f64>> {
        let half = rotary_dims / 2;
        let base = (0..half).map(|i| 1.0 / (freq_base as f64).powf(2.0 * i as f64 / rotary_dims as f64));
        Ok(match self {
            RopeScaling::None => base.collect(),
            RopeScaling::Linear { factor } => base.map(|f| f / *factor as f64).collect(),
            RopeScaling::FreqFactors(factors) => {
                if factors.len() != half {
                    return Err(Error::ModelLoad(format!(
                        "rope_freqs.weight has {} factors for {half} rotary pairs",
                        factors.len()
                    )));
                }
                base.zip(factors).map(|(f, d)| f / *d as f64).collect()
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let (factor, low, high) = (*factor as f64, *low_freq_factor as f64, *high_freq_factor as f64);
                let original = *original_max_position_embeddings as f64;
                let low_freq_wavelen = original / low;
                let high_freq_wavelen = original / high;
                base.map(|f| {
                    let wavelen = 2.0 * PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    #[test]
    fn linear_divides_every_frequency() {
        let plain = RopeScaling::None.inverse_frequencies(8, 10000.0).unwrap();
        let linear = RopeScaling::Linear { factor: 4.0 }.inverse_frequencies(8, 10000.0).unwrap();
        assert_eq!(plain.len(), 4);
        assert!(plain.iter().zip(&linear).all(|(p, l)| close(p / 4.0, *l)));
        assert_eq!(plain[0], 1.0);
    }

    #[test]
    fn llama3_keeps_high_frequencies_and_divides_low_ones() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let plain = RopeScaling::None.inverse_frequencies(128, 500000.0).unwrap();
        let scaled = scaling.inverse_frequencies(128, 500000.0).unwrap();
        assert_eq!(scaled[0], plain[0], "the fastest pair is untouched");
        assert!(close(scaled[63], plain[63] / 8.0), "the slowest pair is divided by the factor");
        // In between, every pair is divided by something from 1 to 8, monotonically more.
        let ratios: Vec<f64> = plain.iter().zip(&scaled).map(|(p, s)| p / s).collect();
        assert!(ratios.windows(2).all(|w| w[1] >= w[0] - 1e-12) && ratios.iter().any(|r| *r > 1.0 && *r < 8.0));
    }

    #[test]
    fn gguf_scaling_types() {
        assert_eq!(RopeScaling::from_gguf(None, None, None).unwrap(), RopeScaling::None);
        assert_eq!(RopeScaling::from_gguf(Some("none"), Some(0.0), None).unwrap(), RopeScaling::None);
        assert_eq!(
            RopeScaling::from_gguf(Some("linear"), Some(2.0), None).unwrap(),
            RopeScaling::Linear { factor: 2.0 }
        );
        assert_eq!(
            RopeScaling::from_gguf(None, Some(2.0), Some(vec![1.0, 4.0])).unwrap(),
            RopeScaling::FreqFactors(vec![2.0, 8.0])
        );
        for refused in ["yarn", "longrope", "whatever"] {
            let err = RopeScaling::from_gguf(Some(refused), Some(4.0), None).unwrap_err().to_string();
            assert!(err.contains(refused), "{err}");
        }
        assert!(RopeScaling::from_gguf(None, None, Some(vec![1.0, 0.0])).is_err());
        let short = RopeScaling::from_gguf(None, None, Some(vec![1.0])).unwrap();
        assert!(short.inverse_frequencies(8, 10000.0).unwrap_err().to_string().contains("1 factors for 4"));
    }

    #[test]
    fn hf_config_scaling_types() {
        assert_eq!(RopeScaling::from_hf_config(None).unwrap(), RopeScaling::None);
        assert_eq!(RopeScaling::from_hf_config(Some(&json!(null))).unwrap(), RopeScaling::None);
        assert_eq!(RopeScaling::from_hf_config(Some(&json!({"rope_type": "default"}))).unwrap(), RopeScaling::None);
        assert_eq!(
            RopeScaling::from_hf_config(Some(&json!({"type": "linear", "factor": 2.0}))).unwrap(),
            RopeScaling::Linear { factor: 2.0 }
        );
        let llama3 = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192});
        assert_eq!(
            RopeScaling::from_hf_config(Some(&llama3)).unwrap(),
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192
            }
        );
        for refused in ["yarn", "dynamic", "longrope"] {
            let err = RopeScaling::from_hf_config(Some(&json!({"rope_type": refused, "factor": 4.0})))
                .unwrap_err()
                .to_string();
            assert!(err.contains(refused), "{err}");
        }
        let missing = json!({"rope_type": "llama3", "factor": 8.0});
        assert!(RopeScaling::from_hf_config(Some(&missing)).unwrap_err().to_string().contains("low_freq_factor"));
    }
}
