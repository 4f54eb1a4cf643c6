//! Chat templates (`tokenizer.chat_template`) rendered with minijinja, as HF transformers does.

use minijinja::{context, Environment, ErrorKind};
use serde::Serialize;

use super::TextTokenizer;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const TEMPLATE_NAME: &str = "chat";

impl ChatTemplate {
    pub fn new(source: &str, tokenizer: &TextTokenizer) -> Result<Self> {
        Self::with_tokens(source, tokenizer.bos_text(), tokenizer.eos_text())
    }

    pub fn with_tokens(source: &str, bos_token: String, eos_token: String) -> Result<Self> {
        let mut env = Environment::new();
        // HF templates call Python string methods (.strip(), .startswith(), ...).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| Error::ModelLoad(format!("the model's chat template does not parse: {e}")))?;
        Ok(Self { env, bos_token, eos_token })
    }

    /// The prompt for `messages`, ending with the assistant turn's opening.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        self.render_with(messages, true)
    }

    /// The prompt for `messages`, with the assistant turn's opening if `add_generation_prompt`.
    pub fn render_with(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template =
            self.env.get_template(TEMPLATE_NAME).map_err(|e| Error::Internal(format!("chat template missing: {e}")))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| Error::InvalidRequest {
                message: format!("the model's chat template rejected the messages: {e}"),
                param: Some("messages".into()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let source = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = ChatTemplate::with_tokens(source, String::new(), String::new()).unwrap();
        let out = t.render(&[ChatMessage { role: "user".into(), content: " hi ".into() }]).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let source = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}{{ messages[0].content.strip().upper() }}";
        let t = ChatTemplate::with_tokens(source, String::new(), String::new()).unwrap();
        let ok = t.render(&[ChatMessage { role: "user".into(), content: " a b ".into() }]).unwrap();
        assert_eq!(ok, "A B");
        let err = t.render(&[ChatMessage { role: "assistant".into(), content: "x".into() }]).unwrap_err();
        assert!(err.to_string().contains("first message must be from the user"), "{err}");
    }
}
