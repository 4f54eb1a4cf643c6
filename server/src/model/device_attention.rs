//! RoPE, the KV write and attention of one batched step as tensor ops on the model's
//! device, over a paged KV cache: nothing leaves the device between layers.
//!
//! A step's items have different lengths and positions. Everything that depends only on
//! them (rotary rows, cache slots, the causal mask, the padding maps) is built once per step
//! in a `StepPlan`; each layer then runs one scatter per K/V tensor and, per group of items,
//! a padded batched attention: queries padded to the group's longest chunk, keys gathered
//! from each item's blocks up to the group's longest context, masked per item.

use candle_core::{DType, Device, Tensor};

use super::attention::{AttentionShape, RopeStyle, RopeTable};
use super::paged_kv::{BlockTable, PagedKvCache};
use crate::error::{Error, Result};

/// Scores of one attention group are at most this many bytes (f32), so a long prefill
/// batched with many decodes splits into groups instead of one huge padded tensor.
const GROUP_SCORE_BYTES: usize = 256 << 20;

/// The rotary table on the device, gathered per token row each step.
pub struct DeviceRope {
    style: RopeStyle,
    rotary_dims: usize,
    cos: Tensor,
    sin: Tensor,
}

impl DeviceRope {
    pub fn new(rope: &RopeTable, device: &Device) -> Result<Self> {
        let half = rope.rotary_dims() / 2;
        let (cos, sin) = rope.tables();
        let positions = rope.max_positions();
        Ok(Self {
            style: rope.style(),
            rotary_dims: rope.rotary_dims(),
            cos: Tensor::from_slice(cos, (positions, half), device)?,
            sin: Tensor::from_slice(sin, (positions, half), device)?,
        })
    }

    /// Rotates `x` (`rows x heads*head_dim`, f32) with the rows' `cos`/`sin` (`rows x half`).
    fn apply(&self, x: &Tensor, heads: usize, head_dim: usize, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let x = x.reshape((rows, heads, head_dim))?;
        let rot = self.rotary_dims;
        let half = rot / 2;
        let cos = cos.unsqueeze(1)?;
        let sin = sin.unsqueeze(1)?;
        let rotated = x.narrow(2, 0, rot)?;
        let (a, b) = match self.style {
            RopeStyle::Halves => (rotated.narrow(2, 0, half)?, rotated.narrow(2, half, half)?),
            RopeStyle::Interleaved => {
                let pairs = rotated.contiguous()?.reshape((rows, heads, half, 2))?;
                (pairs.narrow(3, 0, 1)?.squeeze(3)?, pairs.narrow(3, 1, 1)?.squeeze(3)?)
            }
        };
        let ra = (a.broadcast_mul(&cos)? - b.broadcast_mul(&sin)?)?;
        let rb = (a.broadcast_mul(&sin)? + b.broadcast_mul(&cos)?)?;
        let rotated = match self.style {
            RopeStyle::Halves => Tensor::cat(&[&ra, &rb], 2)?,
            RopeStyle::Interleaved => Tensor::stack(&[&ra, &rb], 3)?.reshape((rows, heads, rot))?,
        };
        let out =
            if rot < head_dim { Tensor::cat(&[&rotated, &x.narrow(2, rot, head_dim - rot)?], 2)? } else { rotated };
        Ok(out.reshape((rows, heads * head_dim))?)
    }
}

/// One item's share of a step: `new` tokens after `cached` ones, in the slots of `table`.
pub struct PlanItem<'a> {
    pub cached: usize,
    pub new: usize,
    pub table: &'a BlockTable,
}

/// Items that attend together in one padded batch.
struct Group {
    batch: usize,
    max_new: usize,
    max_context: usize,
    /// `batch * max_new`: the step row each padded query row takes (padding repeats a row).
    query_rows: Tensor,
    /// `batch * max_context`: the cache slot of each padded key (padding repeats slot 0 of the item).
    key_slots: Tensor,
    /// `batch x 1 x 1 x max_new x max_context`: 0 where a query sees a key, -1e30 elsewhere.
    mask: Tensor,
    /// The padded row of each of the group's real tokens, in step order.
    out_rows: Tensor,
}

/// Everything of a step the layers share.
pub struct StepPlan {
    shape: AttentionShape,
    cos: Tensor,
    sin: Tensor,
    /// `rows x kv_width`: the slot each new token's keys/values go to (scatter index).
    write_index: Tensor,
    groups: Vec<Group>,
}

impl StepPlan {
    pub fn new(items: &[PlanItem<'_>], shape: AttentionShape, rope: &DeviceRope, device: &Device) -> Result<Self> {
        let mut positions = Vec::new();
        let mut slots = Vec::new();
        for item in items {
            for p in item.cached..item.cached + item.new {
                positions.push(p as u32);
                slots.push(item.table.slot(p));
            }
        }
        let rows = positions.len();
        let positions = Tensor::from_vec(positions, rows, device)?;
        let cos = rope.cos.index_select(&positions, 0)?;
        let sin = rope.sin.index_select(&positions, 0)?;
        let write_index =
            Tensor::from_vec(slots, (rows, 1), device)?.broadcast_as((rows, shape.kv_width()))?.contiguous()?;
        let mut groups = Vec::new();
        let mut first_row = 0;
        for range in group_ranges(items, shape.heads) {
            let group = build_group(&items[range.clone()], first_row, device)?;
            first_row += items[range].iter().map(|i| i.new).sum::<usize>();
            groups.push(group);
        }
        Ok(Self { shape, cos, sin, write_index, groups })
    }
}

/// Splits items (in order) into groups whose padded scores stay under GROUP_SCORE_BYTES.
fn group_ranges(items: &[PlanItem<'_>], heads: usize) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut max_new, mut max_context) = (0, 0, 0);
    for (i, item) in items.iter().enumerate() {
        let (n, c) = (max_new.max(item.new), max_context.max(item.cached + item.new));
        let bytes = (i - start + 1) * heads * n * c * 4;
        if i > start && bytes > GROUP_SCORE_BYTES {
            ranges.push(start..i);
            start = i;
            max_new = item.new;
            max_context = item.cached + item.new;
        } else {
            max_new = n;
            max_context = c;
        }
    }
    if start < items.len() {
        ranges.push(start..items.len());
    }
    ranges
}

fn build_group(items: &[PlanItem<'_>], first_row: usize, device: &Device) -> Result<Group> {
    let batch = items.len();
    let max_new = items.iter().map(|i| i.new).max().unwrap_or(1);
    let max_context = items.iter().map(|i| i.cached + i.new).max().unwrap_or(1);
    let mut query_rows = Vec::with_capacity(batch * max_new);
    let mut query_positions = Vec::with_capacity(batch * max_new);
    let mut key_slots = Vec::with_capacity(batch * max_context);
    let mut out_rows = Vec::new();
    let mut row = first_row;
    for (b, item) in items.iter().enumerate() {
        let context = item.cached + item.new;
        for t in 0..max_new {
            if t < item.new {
                query_rows.push((row + t) as u32);
                query_positions.push((item.cached + t) as u32);
                out_rows.push((b * max_new + t) as u32);
            } else {
                // A padding query sees key 0 only (never an all-masked row, whose softmax is NaN).
                query_rows.push(row as u32);
                query_positions.push(0);
            }
        }
        for p in 0..max_context {
            key_slots.push(item.table.slot(if p < context { p } else { 0 }));
        }
        row += item.new;
    }
    let query_positions = Tensor::from_vec(query_positions, (batch, max_new, 1), device)?;
    let key_positions = Tensor::arange(0u32, max_context as u32, device)?.reshape((1, 1, max_context))?;
    // Causal within the item; keys past its context sit beyond every real query position.
    let visible = key_positions.broadcast_le(&query_positions)?.to_dtype(DType::F32)?;
    let mask = visible.affine(1e30, -1e30)?.reshape((batch, 1, 1, max_new, max_context))?;
    let out_len = out_rows.len();
    Ok(Group {
        batch,
        max_new,
        max_context,
        query_rows: Tensor::from_vec(query_rows, batch * max_new, device)?,
        key_slots: Tensor::from_vec(key_slots, batch * max_context, device)?,
        mask,
        out_rows: Tensor::from_vec(out_rows, out_len, device)?,
    })
}

/// One layer's attention for the step: rotates q and k (`rows x width`, f32), writes k and v
/// into the cache, and returns the attention output (`rows x q_width`, f32).
pub fn attend_layer(
    plan: &StepPlan,
    rope: &DeviceRope,
    cache: &PagedKvCache,
    layer: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<Tensor> {
    let AttentionShape { heads, kv_heads, head_dim } = plan.shape;
    let q = rope.apply(q, heads, head_dim, &plan.cos, &plan.sin)?;
    let k = rope.apply(k, kv_heads, head_dim, &plan.cos, &plan.sin)?;
    cache.write(layer, &plan.write_index, &k, v)?;
    let repeats = heads / kv_heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut outputs = Vec::with_capacity(plan.groups.len());
    for g in &plan.groups {
        let (b, n, l) = (g.batch, g.max_new, g.max_context);
        // (b, heads, n, d) -> (b, kv_heads, repeats * n, d): query heads of one kv head together.
        let queries = q
            .index_select(&g.query_rows, 0)?
            .reshape((b, n, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, kv_heads, repeats * n, head_dim))?;
        let gather = |t: &Tensor| -> Result<Tensor> {
            Ok(t.index_select(&g.key_slots, 0)?
                .to_dtype(DType::F32)?
                .reshape((b, l, kv_heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let keys = gather(&cache.keys[layer])?;
        let values = gather(&cache.values[layer])?;
        let scores = (queries.matmul(&keys.transpose(2, 3)?.contiguous()?)? * scale)?
            .reshape((b, kv_heads, repeats, n, l))?
            .broadcast_add(&g.mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.reshape((b, kv_heads, repeats * n, l))?;
        let out = weights
            .matmul(&values)?
            .reshape((b, heads, n, head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * n, heads * head_dim))?
            .index_select(&g.out_rows, 0)?;
        outputs.push(out);
    }
    match outputs.len() {
        0 => Err(Error::Internal("attention step without items".into())),
        1 => Ok(outputs.remove(0)),
        _ => Ok(Tensor::cat(&outputs, 0)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::{causal_attention, LayerKv};
    use crate::model::paged_kv::SharedAllocator;
    use crate::model::KvLayout;

    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * 0.37 + scale).sin()).collect()
    }

    #[test]
    fn device_rope_matches_the_host_table_for_both_styles() {
        for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
            // 2 heads of 6 with 4 rotary dims: the last two pass through.
            let table = RopeTable::new(style, 4, 100.0, 16);
            let rope = DeviceRope::new(&table, &Device::Cpu).unwrap();
            let mut host = ramp(2 * 12, 0.5);
            let x = Tensor::from_slice(&host, (2, 12), &Device::Cpu).unwrap();
            let positions = Tensor::new(&[3u32, 9], &Device::Cpu).unwrap();
            let cos = rope.cos.index_select(&positions, 0).unwrap();
            let sin = rope.sin.index_select(&positions, 0).unwrap();
            let got = rope.apply(&x, 2, 6, &cos, &sin).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            table.apply(&mut host[..12], 6, 3);
            table.apply(&mut host[12..], 6, 9);
            for (a, b) in got.iter().zip(&host) {
                assert!((a - b).abs() < 1e-5, "{style:?}: {a} vs {b}");
            }
        }
    }

    /// Two sequences of different lengths in one step, across block boundaries (2-token
    /// blocks), against the host attention on the same rows rotated by the host table.
    #[test]
    fn paged_attention_matches_host_attention_for_mixed_lengths() {
        let shape = AttentionShape { heads: 4, kv_heads: 2, head_dim: 4 };
        let kvw = shape.kv_width();
        let table = RopeTable::new(RopeStyle::Halves, 4, 1e4, 64);
        let rope = DeviceRope::new(&table, &Device::Cpu).unwrap();
        let layout = KvLayout { block_tokens: 2, blocks: 16 };
        let cache = PagedKvCache::new(1, kvw, layout, DType::F32, &Device::Cpu).unwrap();
        // Sequence a: 5 tokens of prompt; sequence b: 3 cached tokens, then 1 new.
        let mut ta = cache.new_table();
        let mut tb = cache.new_table();
        let mut host_a = LayerKv::default();
        let mut host_b = LayerKv::default();
        let (qa, ka, va) = (ramp(5 * 16, 0.1), ramp(5 * kvw, 0.2), ramp(5 * kvw, 0.3));
        let (qb, kb, vb) = (ramp(4 * 16, 1.1), ramp(4 * kvw, 1.2), ramp(4 * kvw, 1.3));
        let rotate = |rows: &[f32], width: usize, first: usize| {
            let mut rows = rows.to_vec();
            for (i, row) in rows.chunks_exact_mut(width).enumerate() {
                table.apply(row, 4, first + i);
            }
            rows
        };
        // b's first three tokens in a step of their own.
        tb.reserve(3).unwrap();
        let dev = |v: &[f32], rows: usize, w: usize| Tensor::from_slice(v, (rows, w), &Device::Cpu).unwrap();
        let plan = StepPlan::new(&[PlanItem { cached: 0, new: 3, table: &tb }], shape, &rope, &Device::Cpu).unwrap();
        attend_layer(
            &plan,
            &rope,
            &cache,
            0,
            &dev(&qb[..48], 3, 16),
            &dev(&kb[..3 * kvw], 3, kvw),
            &dev(&vb[..3 * kvw], 3, kvw),
        )
        .unwrap();
        host_b.keys.extend(rotate(&kb[..3 * kvw], kvw, 0));
        host_b.values.extend_from_slice(&vb[..3 * kvw]);
        // Then a's prompt and b's fourth token together.
        ta.reserve(5).unwrap();
        tb.reserve(4).unwrap();
        let items = [PlanItem { cached: 0, new: 5, table: &ta }, PlanItem { cached: 3, new: 1, table: &tb }];
        let plan = StepPlan::new(&items, shape, &rope, &Device::Cpu).unwrap();
        let q = [&qa[..], &qb[48..]].concat();
        let k = [&ka[..], &kb[3 * kvw..]].concat();
        let v = [&va[..], &vb[3 * kvw..]].concat();
        let got = attend_layer(&plan, &rope, &cache, 0, &dev(&q, 6, 16), &dev(&k, 6, kvw), &dev(&v, 6, kvw))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        host_a.keys.extend(rotate(&ka, kvw, 0));
        host_a.values.extend_from_slice(&va);
        host_b.keys.extend(rotate(&kb[3 * kvw..], kvw, 3));
        host_b.values.extend_from_slice(&vb[3 * kvw..]);
        let mut want = vec![0f32; 6 * 16];
        causal_attention(shape, &rotate(&qa, 16, 0), &host_a, &mut want[..5 * 16]);
        causal_attention(shape, &rotate(&qb[48..], 16, 3), &host_b, &mut want[5 * 16..]);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-5, "value {i}: {a} vs {b}");
        }
    }

    #[test]
    fn a_long_item_gets_its_own_group() {
        let allocator = SharedAllocator::new(1);
        let table = BlockTable::new(allocator, 16);
        let items = [
            PlanItem { cached: 10, new: 1, table: &table },
            PlanItem { cached: 0, new: 8192, table: &table },
            PlanItem { cached: 20, new: 1, table: &table },
        ];
        let ranges = group_ranges(&items, 32);
        assert_eq!(ranges, vec![0..1, 1..2, 2..3]);
        let small = [PlanItem { cached: 10, new: 1, table: &table }, PlanItem { cached: 20, new: 1, table: &table }];
        assert_eq!(group_ranges(&small, 32), vec![0..2]);
    }
}
