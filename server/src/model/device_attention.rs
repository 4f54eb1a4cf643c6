//! RoPE, the KV write and attention of one batched step as tensor ops on the model's
//! device, over a paged KV cache: nothing leaves the device between layers.
//!
//! A step's items have different lengths and positions. Everything that depends only on
//! them (rotary rows, cache slots, the causal and sliding-window masks, the padding maps) is
//! built once per step in a `StepPlan`; each layer then runs one scatter per K/V tensor and,
//! per group of items, a padded batched attention: queries padded to the group's longest
//! chunk, keys gathered from each item's blocks up to the group's longest context, masked
//! per item.
//!
//! Padding is what such a step wastes, so items are grouped by shape: decodes (one new
//! token) apart from prefill chunks, each ordered by context length, and a group is closed
//! when padding would double its keys or its scores pass GROUP_SCORE_BYTES. The groups'
//! outputs are put back in step order with one gather.

use candle_core::{DType, Device, Tensor};

use super::attention::{AttentionShape, RopeStyle, RopeTable};
use super::paged_kv::{BlockTable, PagedKvCache};
use super::ForwardItem;
use crate::error::{Error, Result};

/// Scores of one attention group are at most this many bytes (f32), so a long prefill
/// batched with many decodes splits into groups instead of one huge padded tensor.
const GROUP_SCORE_BYTES: usize = 256 << 20;

/// A group is closed before padding makes its gathered keys more than twice the real ones,
/// unless the padding is under this many key rows (a few small groups cost more launches
/// than the padding they save).
const GROUP_PADDING_SLACK_KEYS: usize = 4096;

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

    /// The rows of this table at a step's token positions.
    fn rows(&self, positions: &Tensor) -> Result<RotaryRows> {
        Ok(RotaryRows {
            style: self.style,
            rotary_dims: self.rotary_dims,
            cos: self.cos.index_select(positions, 0)?,
            sin: self.sin.index_select(positions, 0)?,
        })
    }
}

/// One rotary table's cos/sin at every token row of a step (`rows x rotary_dims / 2`).
struct RotaryRows {
    style: RopeStyle,
    rotary_dims: usize,
    cos: Tensor,
    sin: Tensor,
}

impl RotaryRows {
    /// Rotates `x` (`rows x heads*head_dim`, f32).
    fn apply(&self, x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let x = x.reshape((rows, heads, head_dim))?;
        let rot = self.rotary_dims;
        let half = rot / 2;
        let cos = self.cos.unsqueeze(1)?;
        let sin = self.sin.unsqueeze(1)?;
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

impl PlanItem<'_> {
    fn context(&self) -> usize {
        self.cached + self.new
    }
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
    /// `mask` that also hides keys a sliding window leaves behind (when the plan has a window).
    window_mask: Option<Tensor>,
    /// The padded row of each of the group's real tokens, in the group's item order.
    out_rows: Tensor,
}

/// Everything of a step the layers share.
pub struct StepPlan {
    shape: AttentionShape,
    /// The rows of every rotary table the plan was made with, in that order.
    rotary: Vec<RotaryRows>,
    /// `rows x kv_width`: the slot each new token's keys/values go to (scatter index).
    write_index: Tensor,
    groups: Vec<Group>,
    /// For each step row, its row in the groups' concatenated output (None: same order).
    restore: Option<Tensor>,
}

impl StepPlan {
    /// The plan items of a step whose tables `DeviceKv::reserve` has grown.
    pub fn items<'a>(items: &'a [ForwardItem<'_>]) -> Result<Vec<PlanItem<'a>>> {
        items
            .iter()
            .map(|item| match item.kv.paged.as_ref() {
                Some(table) => Ok(PlanItem { cached: item.kv.len, new: item.tokens.len(), table }),
                None => Err(Error::Internal("a sequence without a block table on the paged path".into())),
            })
            .collect()
    }

    /// A plan for `items` (in step order) that rotates with each of `ropes` (chosen per layer
    /// by index) and, with a `window`, can mask sliding-window layers.
    pub fn new(
        items: &[PlanItem<'_>],
        shape: AttentionShape,
        ropes: &[&DeviceRope],
        window: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
        let mut positions = Vec::new();
        let mut slots = Vec::new();
        let mut first_rows = Vec::with_capacity(items.len());
        for item in items {
            first_rows.push(positions.len());
            for p in item.cached..item.context() {
                positions.push(p as u32);
                slots.push(item.table.slot(p));
            }
        }
        let rows = positions.len();
        let positions = Tensor::from_vec(positions, rows, device)?;
        let rotary = ropes.iter().map(|rope| rope.rows(&positions)).collect::<Result<Vec<_>>>()?;
        let write_index =
            Tensor::from_vec(slots, (rows, 1), device)?.broadcast_as((rows, shape.kv_width()))?.contiguous()?;
        let grouping = group_items(items, shape.heads);
        let mut groups = Vec::with_capacity(grouping.len());
        // output_row[r]: where step row r lands in the concatenated group outputs.
        let mut output_row = vec![0u32; rows];
        let mut next_output = 0u32;
        for members in &grouping {
            for &i in members {
                for t in 0..items[i].new {
                    output_row[first_rows[i] + t] = next_output;
                    next_output += 1;
                }
            }
            groups.push(build_group(items, &first_rows, members, window, device)?);
        }
        let in_order = output_row.iter().enumerate().all(|(r, o)| *o as usize == r);
        let restore = if in_order { None } else { Some(Tensor::from_vec(output_row, rows, device)?) };
        Ok(Self { shape, rotary, write_index, groups, restore })
    }

    /// Rotates `x` (`rows x heads*head_dim`, f32) with the plan's `rope`-th table.
    pub fn rotate(&self, rope: usize, x: &Tensor, heads: usize) -> Result<Tensor> {
        let rows = self
            .rotary
            .get(rope)
            .ok_or_else(|| Error::Internal(format!("rotary table {rope} of {} in the step plan", self.rotary.len())))?;
        rows.apply(x, heads, self.shape.head_dim)
    }
}

/// Splits items into attention groups (indices into `items`): decodes apart from prefill
/// chunks, each by ascending context, a group closed when it would pass GROUP_SCORE_BYTES
/// or when padding would more than double its keys (beyond GROUP_PADDING_SLACK_KEYS).
fn group_items(items: &[PlanItem<'_>], heads: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i].new > 1, items[i].context()));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let (mut max_new, mut max_context, mut real_keys) = (0, 0, 0);
    for i in order {
        let item = &items[i];
        let (n, c) = (max_new.max(item.new), max_context.max(item.context()));
        let batch = current.len() + 1;
        let padded_keys = batch * c;
        let keys = real_keys + item.context();
        let too_big = batch * heads * n * c * 4 > GROUP_SCORE_BYTES;
        let too_padded = padded_keys > 2 * keys && padded_keys - keys > GROUP_PADDING_SLACK_KEYS;
        let other_kind = current.first().is_some_and(|&first| (items[first].new > 1) != (item.new > 1));
        if !current.is_empty() && (too_big || too_padded || other_kind) {
            groups.push(std::mem::take(&mut current));
            (max_new, max_context, real_keys) = (item.new, item.context(), item.context());
        } else {
            (max_new, max_context, real_keys) = (n, c, keys);
        }
        current.push(i);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// 0 where `visible`, -1e30 elsewhere, shaped `batch x 1 x 1 x max_new x max_context`.
fn additive_mask(visible: &Tensor, batch: usize, max_new: usize, max_context: usize) -> Result<Tensor> {
    Ok(visible.to_dtype(DType::F32)?.affine(1e30, -1e30)?.reshape((batch, 1, 1, max_new, max_context))?)
}

fn build_group(
    items: &[PlanItem<'_>],
    first_rows: &[usize],
    members: &[usize],
    window: Option<usize>,
    device: &Device,
) -> Result<Group> {
    let batch = members.len();
    let max_new = members.iter().map(|&i| items[i].new).max().unwrap_or(1);
    let max_context = members.iter().map(|&i| items[i].context()).max().unwrap_or(1);
    let mut query_rows = Vec::with_capacity(batch * max_new);
    let mut query_positions = Vec::with_capacity(batch * max_new);
    let mut key_slots = Vec::with_capacity(batch * max_context);
    let mut out_rows = Vec::new();
    for (b, &i) in members.iter().enumerate() {
        let (item, row) = (&items[i], first_rows[i]);
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
            key_slots.push(item.table.slot(if p < item.context() { p } else { 0 }));
        }
    }
    let query_positions = Tensor::from_vec(query_positions, (batch, max_new, 1), device)?;
    let key_positions = Tensor::arange(0u32, max_context as u32, device)?.reshape((1, 1, max_context))?;
    // Causal within the item; keys past its context sit beyond every real query position.
    let causal = key_positions.broadcast_le(&query_positions)?;
    let mask = additive_mask(&causal, batch, max_new, max_context)?;
    // A window of w shows a query at p the keys p - w + 1 ..= p: key + w > p. Position 0
    // (padding queries) always sees key 0.
    let window_mask = match window {
        Some(w) => {
            let shifted = (key_positions.to_dtype(DType::F32)? + w as f64)?;
            let recent = shifted.broadcast_gt(&query_positions.to_dtype(DType::F32)?)?;
            Some(additive_mask(
                &(causal.to_dtype(DType::F32)? * recent.to_dtype(DType::F32)?)?,
                batch,
                max_new,
                max_context,
            )?)
        }
        None => None,
    };
    let out_len = out_rows.len();
    Ok(Group {
        batch,
        max_new,
        max_context,
        query_rows: Tensor::from_vec(query_rows, batch * max_new, device)?,
        key_slots: Tensor::from_vec(key_slots, batch * max_context, device)?,
        mask,
        window_mask,
        out_rows: Tensor::from_vec(out_rows, out_len, device)?,
    })
}

/// One llama-family layer's attention for the step: rotates q and k (`rows x width`, f32)
/// with the plan's first table, writes k and v into the cache, and returns the attention
/// output (`rows x q_width`, f32).
pub fn attend_layer(
    plan: &StepPlan,
    cache: &PagedKvCache,
    layer: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<Tensor> {
    let q = plan.rotate(0, q, plan.shape.heads)?;
    let k = plan.rotate(0, k, plan.shape.kv_heads)?;
    attend_rotated(plan, cache, layer, false, &q, &k, v)
}

/// Writes the (already rotated) keys `k` and values `v` of layer `layer` into the cache and
/// attends the queries `q` over each item's context, within the plan's sliding window when
/// `windowed`. Queries are scaled by `1/sqrt(head_dim)`.
pub fn attend_rotated(
    plan: &StepPlan,
    cache: &PagedKvCache,
    layer: usize,
    windowed: bool,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<Tensor> {
    let AttentionShape { heads, kv_heads, head_dim } = plan.shape;
    cache.write(layer, &plan.write_index, k, v)?;
    let repeats = heads / kv_heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut outputs = Vec::with_capacity(plan.groups.len());
    for g in &plan.groups {
        let (b, n, l) = (g.batch, g.max_new, g.max_context);
        let mask = match (windowed, &g.window_mask) {
            (false, _) => &g.mask,
            (true, Some(mask)) => mask,
            (true, None) => return Err(Error::Internal("a windowed layer in a step plan without a window".into())),
        };
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
            .broadcast_add(mask)?;
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
    let grouped = match outputs.len() {
        0 => return Err(Error::Internal("attention step without items".into())),
        1 => outputs.remove(0),
        _ => Tensor::cat(&outputs, 0)?,
    };
    Ok(match &plan.restore {
        Some(restore) => grouped.index_select(restore, 0)?,
        None => grouped,
    })
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
            let rows = rope.rows(&positions).unwrap();
            let got = rows.apply(&x, 2, 6).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
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
        let plan =
            StepPlan::new(&[PlanItem { cached: 0, new: 3, table: &tb }], shape, &[&rope], None, &Device::Cpu).unwrap();
        attend_layer(
            &plan,
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
        let plan = StepPlan::new(&items, shape, &[&rope], None, &Device::Cpu).unwrap();
        // The decode is grouped apart from the prompt, so the output is put back in step order.
        assert!(plan.restore.is_some());
        let q = [&qa[..], &qb[48..]].concat();
        let k = [&ka[..], &kb[3 * kvw..]].concat();
        let v = [&va[..], &vb[3 * kvw..]].concat();
        let got = attend_layer(&plan, &cache, 0, &dev(&q, 6, 16), &dev(&k, 6, kvw), &dev(&v, 6, kvw))
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
        assert_eq!(group_items(&items, 32), vec![vec![0, 2], vec![1]]);
        let small = [PlanItem { cached: 10, new: 1, table: &table }, PlanItem { cached: 20, new: 1, table: &table }];
        assert_eq!(group_items(&small, 32), vec![vec![0, 1]]);
    }

    #[test]
    fn decodes_group_apart_from_prefills_and_by_context_length() {
        let allocator = SharedAllocator::new(1);
        let table = BlockTable::new(allocator, 16);
        let item = |cached, new| PlanItem { cached, new, table: &table };
        // Decodes at 64..2048 tokens of context, two prompt chunks.
        let items = [item(2047, 1), item(0, 40), item(63, 1), item(1000, 1), item(0, 30), item(2000, 1), item(100, 1)];
        let groups = group_items(&items, 32);
        // Decodes by context: 64, 101 and 1001 together (their padding, 1837 keys, is under
        // the slack); 2001 would pad them by 4837 keys to more than twice their 3167, so the
        // two longest form their own group; the prompts last.
        assert_eq!(groups, vec![vec![2, 6, 3], vec![5, 0], vec![4, 1]]);
        // Every item exactly once.
        let mut all: Vec<usize> = groups.concat();
        all.sort();
        assert_eq!(all, (0..items.len()).collect::<Vec<_>>());
    }

    /// A sliding window of 3 in the plan: the windowed layer sees the last three keys of each
    /// query, the global one all of them, against the host kernel with the same window.
    #[test]
    fn the_window_mask_matches_the_host_kernel() {
        use crate::model::kernels::attention::causal_attention as host_attention;
        let shape = AttentionShape { heads: 2, kv_heads: 1, head_dim: 4 };
        let kvw = shape.kv_width();
        let table = RopeTable::new(RopeStyle::Halves, 4, 1e4, 64);
        let rope = DeviceRope::new(&table, &Device::Cpu).unwrap();
        let cache =
            PagedKvCache::new(2, kvw, KvLayout { block_tokens: 2, blocks: 8 }, DType::F32, &Device::Cpu).unwrap();
        let mut t = cache.new_table();
        t.reserve(7).unwrap();
        let (q, k, v) = (ramp(7 * 8, 0.4), ramp(7 * kvw, 0.5), ramp(7 * kvw, 0.6));
        let plan = StepPlan::new(&[PlanItem { cached: 0, new: 7, table: &t }], shape, &[&rope], Some(3), &Device::Cpu)
            .unwrap();
        let dev = |v: &[f32], w: usize| Tensor::from_slice(v, (7, w), &Device::Cpu).unwrap();
        for (layer, window) in [(0, Some(3)), (1, None)] {
            let got = attend_rotated(&plan, &cache, layer, window.is_some(), &dev(&q, 8), &dev(&k, kvw), &dev(&v, kvw))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut want = vec![0f32; 7 * 8];
            host_attention(shape, &q, &k, &v, &mut want, window);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-5, "window {window:?}, value {i}: {a} vs {b}");
            }
        }
    }
}
