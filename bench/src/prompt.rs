//! Random English-like prompts from a built-in word list.
//!
//! Approximation: 0.9 words per token ([`WORDS_PER_TOKEN`]), i.e. a prompt of P tokens has
//! round(0.9 * P) words, arranged in sentences (capitalised first word, full stop every 6-14
//! words). Every word is drawn independently, so two prompts share no prefix beyond chance
//! and no prompt or prefix cache helps either server. The exact token count depends on the
//! server's tokenizer; the bench reports the servers' own `usage.prompt_tokens` mean. The ratio
//! was calibrated on SmolLM2's tokenizer (49k BPE, shared by infergate and llama-server for the
//! same GGUF): 75 words of this list came to 84 prompt tokens on average.

use rand::seq::IndexedRandom;
use rand::Rng;

/// Words per token assumed when sizing prompts.
pub const WORDS_PER_TOKEN: f64 = 0.9;

/// The built-in vocabulary: common English nouns, adjectives, verbs and adverbs.
pub const WORDS: &[&str] = &[
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "community",
    "name",
    "president",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "information",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "person",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
    "girl",
    "guy",
    "moment",
    "air",
    "teacher",
    "force",
    "education",
    "foot",
    "boy",
    "age",
    "policy",
    "music",
    "market",
    "sense",
    "nation",
    "plan",
    "college",
    "interest",
    "death",
    "experience",
    "effect",
    "class",
    "control",
    "care",
    "field",
    "development",
    "role",
    "effort",
    "rate",
    "heart",
    "drug",
    "show",
    "leader",
    "light",
    "voice",
    "wife",
    "police",
    "mind",
    "price",
    "report",
    "decision",
    "son",
    "view",
    "relationship",
    "town",
    "road",
    "arm",
    "difference",
    "value",
    "building",
    "action",
    "model",
    "season",
    "society",
    "tax",
    "director",
    "position",
    "player",
    "record",
    "paper",
    "space",
    "ground",
    "form",
    "event",
    "official",
    "matter",
    "center",
    "couple",
    "site",
    "project",
    "activity",
    "star",
    "table",
    "need",
    "court",
    "oil",
    "situation",
    "cost",
    "industry",
    "figure",
    "street",
    "image",
    "phone",
    "data",
    "picture",
    "practice",
    "piece",
    "land",
    "product",
    "doctor",
    "wall",
    "patient",
    "worker",
    "news",
    "test",
    "movie",
    "north",
    "love",
    "support",
    "technology",
    "step",
    "baby",
    "computer",
    "type",
    "attention",
    "film",
    "tree",
    "source",
    "organization",
    "hair",
    "window",
    "evidence",
    "population",
    "truth",
    "song",
    "summer",
    "river",
    "garden",
    "bridge",
    "mountain",
    "winter",
    "island",
    "forest",
    "ocean",
    "harbor",
    "engine",
    "signal",
    "letter",
    "carpet",
    "silver",
    "orange",
    "purple",
    "yellow",
    "gentle",
    "bright",
    "quiet",
    "simple",
    "careful",
    "honest",
    "ancient",
    "modern",
    "rapid",
    "steady",
    "narrow",
    "heavy",
    "little",
    "early",
    "recent",
    "common",
    "strange",
    "proper",
    "obvious",
    "remarkable",
    "ordinary",
    "particular",
    "beautiful",
    "wonderful",
    "available",
    "certain",
    "different",
    "important",
    "public",
    "possible",
    "similar",
    "special",
    "strong",
    "whole",
    "another",
    "general",
    "natural",
    "physical",
    "private",
    "serious",
    "single",
    "social",
    "various",
    "western",
    "walk",
    "talk",
    "build",
    "carry",
    "follow",
    "gather",
    "listen",
    "measure",
    "notice",
    "offer",
    "open",
    "produce",
    "reach",
    "remember",
    "return",
    "travel",
    "wander",
    "whisper",
    "explain",
    "describe",
    "consider",
    "discover",
    "imagine",
    "prepare",
    "protect",
    "provide",
    "receive",
    "remain",
    "replace",
    "require",
    "suggest",
    "understand",
    "quickly",
    "slowly",
    "often",
    "always",
    "never",
    "sometimes",
    "perhaps",
    "nearly",
    "almost",
    "rather",
    "quite",
    "already",
    "again",
    "together",
    "outside",
    "inside",
    "beneath",
    "beyond",
    "across",
    "along",
    "around",
    "through",
    "during",
    "before",
    "after",
    "while",
    "because",
    "although",
];

/// Number of words for a prompt of about `tokens` tokens (at least 1).
pub fn word_count(tokens: usize) -> usize {
    ((tokens as f64 * WORDS_PER_TOKEN).round() as usize).max(1)
}

/// A fresh random prompt of about `tokens` tokens.
pub fn generate<R: Rng + ?Sized>(rng: &mut R, tokens: usize) -> String {
    let n = word_count(tokens);
    let mut out = String::with_capacity(n * 8);
    let mut until_stop = rng.random_range(6..=14);
    let mut sentence_start = true;
    for i in 0..n {
        let word = WORDS.choose(rng).expect("word list is not empty");
        if i > 0 {
            out.push(' ');
        }
        if sentence_start {
            let mut chars = word.chars();
            if let Some(c) = chars.next() {
                out.extend(c.to_uppercase());
                out.push_str(chars.as_str());
            }
            sentence_start = false;
        } else {
            out.push_str(word);
        }
        until_stop -= 1;
        if until_stop == 0 || i + 1 == n {
            out.push('.');
            sentence_start = true;
            until_stop = rng.random_range(6..=14);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn word_count_follows_ratio() {
        assert_eq!(word_count(100), 90);
        assert_eq!(word_count(1), 1);
        assert_eq!(word_count(0), 1);
        assert_eq!(word_count(1000), 900);
    }

    #[test]
    fn prompt_has_requested_word_count() {
        let mut rng = StdRng::seed_from_u64(1);
        for tokens in [1, 10, 100, 512] {
            let p = generate(&mut rng, tokens);
            assert_eq!(p.split_whitespace().count(), word_count(tokens), "{p}");
            assert!(p.ends_with('.'));
            assert!(p.chars().next().unwrap().is_uppercase());
        }
    }

    #[test]
    fn prompts_differ_and_seed_reproduces() {
        let mut a = StdRng::seed_from_u64(5);
        let mut b = StdRng::seed_from_u64(5);
        let p1 = generate(&mut a, 100);
        let p2 = generate(&mut a, 100);
        assert_ne!(p1, p2);
        assert_eq!(p1, generate(&mut b, 100));
        // Different prompts diverge within the first few words (no shared prefix to cache).
        let w1: Vec<_> = p1.split_whitespace().take(5).collect();
        let w2: Vec<_> = p2.split_whitespace().take(5).collect();
        assert_ne!(w1, w2);
    }

    #[test]
    fn word_list_is_sane() {
        assert!(WORDS.len() >= 200);
        assert!(WORDS.iter().all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase())));
    }
}
