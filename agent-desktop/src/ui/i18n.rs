//! Every word the app shows, in English and Simplified Chinese: one typed
//! table ([`Texts`]), one instance per language ([`EN`], [`ZH`]).
//!
//! A typed table rather than Fluent (`.ftl` files looked up by key at run
//! time): a text missing from one language is a compile error, since every
//! field of the one struct must be filled; a text with values takes them as
//! typed arguments, so a count cannot be passed where a name is meant; there
//! is nothing to parse or look up at run time and no new dependency; and
//! each text stays greppable next to its translation. Fluent's strengths
//! (translators editing files without a build, plural rules for many
//! languages) do not pay for themselves with two languages, English and
//! Chinese, one of which has no plural forms.
//!
//! The language in force is per thread ([`tr`], [`set`]): the app sets it on
//! the thread that runs its `update` and `view` (iced's main thread; a
//! test's own thread in tests, so tests in one process cannot change each
//! other's language). A task that words something on an executor thread
//! takes the texts with it (`let t = tr();` before the `async move`).
//!
//! What the server or a visitor wrote (names, messages, the server's error
//! text) is data and is shown as it is; what the app knows as a kind (an
//! error code, a system line's [`Notice`], a delivery state) is worded here.

use std::cell::Cell;
use std::sync::Arc;

use holdfast_protocol::agent::{ConversationState, InvitationState, Presence, Role};
use holdfast_protocol::notice::{LeaveReason, Notice};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ui::attention::Level;
use crate::ui::theme::Choice;
use holdfast_client::store::DeliveryState;
use holdfast_client::{ClientError, StoreError};

/// A language the app speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Zh, Lang::En];

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }

    /// The language's own name, the same in every language, so someone
    /// who cannot read the current one still finds theirs.
    pub fn autonym(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Zh => "中文",
        }
    }

    /// A stable name for widget ids and the prefs file.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The language for an OS locale as `sys-locale` or `LANG` gives it
    /// (`zh_CN.UTF-8`, `zh-Hans-CN`, `en-US`, `C`): any Chinese one is
    /// Chinese, Traditional included (Simplified is the one Chinese the app
    /// has, and its readers read it far more easily than English);
    /// everything else, and no locale at all, is English.
    pub fn from_locale(locale: &str) -> Lang {
        let tag = locale.trim().to_ascii_lowercase();
        let language = tag.split(['-', '_', '.', '@']).next().unwrap_or_default();
        if language == "zh" { Lang::Zh } else { Lang::En }
    }
}

impl Lang {
    /// The app language that what is written for a visitor by default
    /// (an invitation, `{visitor.name}` in a canned reply) should be in,
    /// from the visitor's language tag (PROTOCOL.md 10.24): any Chinese is
    /// Chinese, any other language English; `None` when the visitor's
    /// language is unknown, and the agent's own then applies.
    pub fn for_visitor(tag: Option<&str>) -> Option<Lang> {
        let tag = tag?.trim();
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        if primary.is_empty() {
            None
        } else if primary.eq_ignore_ascii_case("zh") {
            Some(Lang::Zh)
        } else {
            Some(Lang::En)
        }
    }
}

/// The texts for writing to a visitor whose language tag is `tag`: theirs
/// when known (see [`Lang::for_visitor`]), else the agent's.
pub fn for_visitor(tag: Option<&str>) -> &'static Texts {
    Lang::for_visitor(tag).map_or_else(tr, Lang::texts)
}

/// The languages the app can name (a visitor's, 10.24): the common ones of
/// the web, by their primary subtag. A language not here is shown by its
/// tag, which an agent can still look up; every catalog must name each one
/// (`Texts::language_name`), so a new one cannot be left untranslated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Arabic,
    Chinese,
    Dutch,
    English,
    French,
    German,
    Hindi,
    Indonesian,
    Italian,
    Japanese,
    Korean,
    Malay,
    Polish,
    Portuguese,
    Russian,
    Spanish,
    Thai,
    Turkish,
    Vietnamese,
}

impl Language {
    /// The language of a BCP 47 tag, by its primary subtag (`zh-CN` and
    /// `zh-Hant-TW` are both Chinese); `None` for one not in the table.
    pub fn from_tag(tag: &str) -> Option<Language> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        Some(match primary.as_str() {
            "ar" => Language::Arabic,
            "zh" => Language::Chinese,
            "nl" => Language::Dutch,
            "en" => Language::English,
            "fr" => Language::French,
            "de" => Language::German,
            "hi" => Language::Hindi,
            "id" => Language::Indonesian,
            "it" => Language::Italian,
            "ja" => Language::Japanese,
            "ko" => Language::Korean,
            "ms" => Language::Malay,
            "pl" => Language::Polish,
            "pt" => Language::Portuguese,
            "ru" => Language::Russian,
            "es" => Language::Spanish,
            "th" => Language::Thai,
            "tr" => Language::Turkish,
            "vi" => Language::Vietnamese,
            _ => return None,
        })
    }
}

/// A visitor's language as the agent reads it: its name in the app's
/// language, or the tag itself when the table has no name for it.
pub fn language_name(tag: &str) -> String {
    match Language::from_tag(tag) {
        Some(l) => (tr().language_name)(l).to_owned(),
        None => tag.to_owned(),
    }
}

/// A prefs value for the language that tolerates what it does not know: a
/// language from a newer version (or a hand-edited typo) means "follow the
/// OS" rather than a prefs file that fails to load and loses the account.
pub fn lenient_lang<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Lang>, D::Error> {
    let raw = Option::<serde_json::Value>::deserialize(d)?;
    Ok(raw.and_then(|v| serde_json::from_value(v).ok()))
}

thread_local! {
    static CURRENT: Cell<Lang> = const { Cell::new(Lang::En) };
}

/// The texts of the language in force on this thread.
pub fn tr() -> &'static Texts {
    current().texts()
}

/// The language in force on this thread.
pub fn current() -> Lang {
    CURRENT.with(Cell::get)
}

/// Speak `lang` on this thread from now on.
pub fn set(lang: Lang) {
    CURRENT.with(|c| c.set(lang));
}

/// Words kept to be shown later (the sign-in screen's error and notice),
/// worded each time they are drawn, so a language switch rewords them too.
/// What came from outside (the server's own message, an OS error) is held
/// inside as it is; [`Words::fixed`] holds text that is only data.
#[derive(Clone)]
pub struct Words(Arc<dyn Fn(&Texts) -> String + Send + Sync>);

impl Words {
    pub fn new(f: impl Fn(&Texts) -> String + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Words from something that cannot be kept (an error that is not
    /// `Clone`): worded in every language now, the one in force shown.
    pub fn worded(f: impl Fn(&Texts) -> String) -> Self {
        let (en, zh) = (f(&EN), f(&ZH));
        Self::new(move |_| match current() {
            Lang::En => en.clone(),
            Lang::Zh => zh.clone(),
        })
    }

    /// Text that is the same in every language.
    pub fn fixed(text: impl Into<String>) -> Self {
        let text: String = text.into();
        Self::new(move |_| text.clone())
    }

    /// The words in the language in force.
    pub fn text(&self) -> String {
        (self.0)(tr())
    }
}

impl std::fmt::Debug for Words {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

impl From<&str> for Words {
    fn from(text: &str) -> Self {
        Self::fixed(text)
    }
}

impl From<String> for Words {
    fn from(text: String) -> Self {
        Self::fixed(text)
    }
}

/// Every text of the app in one language. Plain fields for fixed words;
/// `fn` fields for words with values in them, whose arguments say what
/// goes in.
#[derive(Debug)]
pub struct Texts {
    // Time and dates.
    pub today: &'static str,
    pub yesterday: &'static str,
    /// A date in a day separator: year, month (1–12), day, weekday (0 =
    /// Monday).
    pub date: fn(i32, u8, u8, u8) -> String,
    pub seconds: fn(i64) -> String,
    pub minutes: fn(i64) -> String,
    pub hours_minutes: fn(i64, i64) -> String,
    pub days: fn(i64) -> String,
    pub unknown_browser: &'static str,
    pub unknown_os: &'static str,
    /// A visitor who gave no name: the start of their id.
    pub visitor_short: fn(&str) -> String,
    /// A visitor who gave no name, before their language and page
    /// ("Visitor · Chinese · /pricing").
    pub visitor_word: &'static str,
    /// A visitor's language by name (PROTOCOL.md 10.24).
    pub language_name: fn(Language) -> &'static str,

    // Connection.
    pub connected: &'static str,
    pub reconnecting_in: fn(u64) -> String,
    pub connecting: &'static str,
    pub offline: &'static str,
    pub unsent: fn(usize) -> String,

    // Login.
    pub login_tagline: &'static str,
    pub server_address: &'static str,
    pub username: &'static str,
    pub username_placeholder: &'static str,
    pub password: &'static str,
    pub password_placeholder: &'static str,
    pub sign_in: &'static str,
    pub cancel: &'static str,
    pub password_in_memory: &'static str,
    pub enter_server: &'static str,
    pub enter_username: &'static str,
    pub enter_password: &'static str,
    pub cannot_create: fn(&str, &str) -> String,
    pub cannot_reach: fn(&str, &str, u64) -> String,
    pub wrong_password: &'static str,
    pub account_disabled: &'static str,
    pub password_changed: &'static str,
    pub version_mismatch: fn(&str) -> String,
    pub throttled: fn(u64) -> String,
    pub login_too_large: fn(&str) -> String,
    pub sign_in_failed: fn(&str, &str) -> String,
    pub key_mismatch_refused: &'static str,
    pub key_not_trusted: &'static str,
    pub signed_out_released: &'static str,
    pub signed_out_offline: &'static str,

    // The server key prompt.
    pub trust_first_title: &'static str,
    pub trust_first_body: fn(&str) -> String,
    pub trust_this_server: &'static str,
    pub mismatch_title: &'static str,
    pub mismatch_body: fn(&str) -> String,
    pub pinned_fingerprint: &'static str,
    pub presented_fingerprint: &'static str,
    pub disconnect: &'static str,
    pub trust_new_key: &'static str,

    // Top and connection bars.
    pub theme: &'static str,
    pub theme_light: &'static str,
    pub theme_dark: &'static str,
    pub theme_system: &'static str,
    pub language: &'static str,
    pub canned_replies: &'static str,
    pub online: &'static str,
    pub away: &'static str,
    pub sign_out: &'static str,
    pub signing_out: &'static str,
    pub reconnect_now: &'static str,
    pub away_notice: &'static str,
    pub go_online: &'static str,
    pub password_to_connect: &'static str,
    pub connect: &'static str,
    pub dismiss: &'static str,
    pub server_refused: fn(&str, &str) -> String,
    pub server_error: fn(&str, &str) -> String,
    pub store_error: fn(&str) -> String,
    pub not_signed_in: &'static str,

    // Panels and rails.
    pub hide_lists: &'static str,
    pub hide_details: &'static str,
    pub hide_lists_tip: &'static str,
    pub hide_details_tip: &'static str,
    pub show_lists_tip: &'static str,
    pub show_details_tip: &'static str,
    pub n_waiting: fn(usize) -> String,
    pub n_unread: fn(u32) -> String,

    // The waiting queue.
    pub waiting_heading: fn(usize) -> String,
    pub no_one_waiting: &'static str,
    pub waiting_for: fn(&str) -> String,
    pub long_wait: &'static str,
    pub very_long_wait: &'static str,
    pub left_a_message_suffix: &'static str,
    pub accept: &'static str,

    // Conversations and team.
    pub my_conversations: fn(usize) -> String,
    pub no_open_conversations: &'static str,
    pub team_chats: fn(usize) -> String,
    pub no_team_chats: &'static str,
    pub team: fn(usize) -> String,
    pub you_suffix: &'static str,
    pub presence_online: &'static str,
    pub presence_away: &'static str,
    pub presence_offline: &'static str,
    pub role_agent: &'static str,
    pub role_supervisor: &'static str,
    pub role_admin: &'static str,
    pub place_on: fn(&str) -> String,
    pub place_left: fn(&str) -> String,

    // Visitors.
    pub visitors_live: fn(usize) -> String,
    pub visitors_cached: fn(usize) -> String,
    pub nobody_browsing: &'static str,
    pub on_site_for: fn(&str) -> String,
    pub name_stated: &'static str,
    pub attributes_stated: &'static str,
    pub untitled_page: &'static str,
    pub from_referrer: fn(&str) -> String,
    pub invitation_fired: &'static str,
    pub invitation_shown: &'static str,
    pub invitation_accepted: &'static str,
    pub invitation_dismissed: &'static str,
    pub auto_invited: fn(&str, &str, &str) -> String,
    pub details: &'static str,
    pub open_chat: &'static str,
    pub chatting_with_you: &'static str,
    pub chatting_with: fn(&str) -> String,
    pub waiting_in_queue: &'static str,
    pub invite_to_chat: &'static str,
    pub edit_invitation: &'static str,
    pub invitation_placeholder: &'static str,
    /// The invitation a visitor gets when the agent wrote none.
    pub default_invite: &'static str,
    pub site_id_verified: fn(&str) -> String,
    pub id_verified: &'static str,
    pub site_id_stated: fn(&str) -> String,
    pub no_email_left: &'static str,
    pub left_on: fn(&str) -> String,

    // Details.
    pub details_empty: &'static str,
    pub stated_by_visitor: &'static str,
    pub name_line: fn(&str) -> String,
    pub email_line: fn(&str) -> String,
    pub not_identified: &'static str,
    pub on_site_now: &'static str,
    pub gone: &'static str,
    pub on_site_since: fn(&str) -> String,
    pub came_from: fn(&str) -> String,
    pub page_trail: &'static str,
    pub untitled: &'static str,
    pub not_on_site_now: &'static str,
    pub past_conversations: &'static str,
    pub not_loaded: &'static str,
    pub load_history: &'static str,
    pub none: &'static str,
    pub a_file: &'static str,
    pub visitor_said: fn(&str) -> String,
    pub note_from: fn(&str, &str) -> String,
    pub loading: &'static str,
    pub load_older_history: &'static str,
    pub history_refused: fn(&str, &str) -> String,
    pub blocked: fn(&str) -> String,
    pub blocking: &'static str,
    pub unblocking: &'static str,
    pub unblocked: &'static str,
    pub not_blocked: fn(&str) -> String,
    pub not_unblocked: fn(&str) -> String,
    pub unblock: &'static str,
    pub block: &'static str,
    pub block_explained: &'static str,
    pub block_reason: &'static str,
    pub block_by_address: &'static str,
    pub confirm: &'static str,

    // Signing out.
    pub open_chats: fn(usize) -> String,
    pub sign_out_one: &'static str,
    pub sign_out_many: &'static str,
    pub sign_out_offline: &'static str,
    pub return_one: &'static str,
    pub return_many: &'static str,
    pub transfer_one_to: &'static str,
    pub transfer_many_to: &'static str,

    // Jump to conversation.
    pub jump_title: &'static str,
    pub jump_keys: &'static str,
    pub jump_placeholder: &'static str,
    pub jump_none: &'static str,

    // Tab's focus ring: the keys of a focused list.
    pub ring_keys_lists: &'static str,
    pub ring_keys_visitors: &'static str,
    /// The details' keys, when Enter invites the visitor.
    pub ring_keys_details_invite: &'static str,
    /// The details' keys, when Enter opens the visitor's chat.
    pub ring_keys_details_open: &'static str,
    /// The details' keys, when Enter has nothing to do (the visitor left).
    pub ring_keys_details: &'static str,
    /// Under the name of a visitor who gave none: their id, so two alike
    /// can be told apart.
    pub visitor_id_line: fn(&str) -> String,

    // The chat.
    pub pick_a_conversation: &'static str,
    pub state_waiting: &'static str,
    pub state_open: &'static str,
    pub state_closed: &'static str,
    pub state_left_message: &'static str,
    pub serving_read_only: fn(&str) -> String,
    pub serving_now: fn(&str) -> String,
    pub another_agent: &'static str,
    pub transfer_open: &'static str,
    pub close_conversation: &'static str,
    pub load_earlier: &'static str,
    pub note_placeholder: &'static str,
    pub reply_placeholder: &'static str,
    pub internal_note: &'static str,
    pub attach: &'static str,
    pub add_note: &'static str,
    pub send: &'static str,
    pub read_only: fn(&str) -> String,
    pub serves_now: fn(&str) -> String,
    pub not_open: &'static str,
    pub waits_for_group: fn(&str) -> String,
    pub drop_to_send: &'static str,
    pub drop_not_here: &'static str,
    pub transfer_to: &'static str,
    pub transfer_to_group: &'static str,
    pub group_closed: fn(&str) -> String,
    pub for_group: fn(&str) -> String,
    pub no_transfer_targets: &'static str,
    pub transfer_note: &'static str,
    pub transfer: &'static str,
    pub note_header: fn(&str, &str) -> String,
    pub copy: &'static str,
    pub copied: &'static str,
    pub delivery_queued: &'static str,
    pub delivery_sent: &'static str,
    pub delivery_delivered: &'static str,
    pub delivery_failed: &'static str,
    pub tags: &'static str,
    pub add_tag: &'static str,
    pub saving_lower: &'static str,
    pub visitor_typing: &'static str,
    pub not_sent_yet: fn(&str) -> String,
    pub chat_not_here: &'static str,
    pub serving_this_visitor: fn(&str) -> String,

    // Canned replies.
    pub canned_no_shortcut: &'static str,
    pub canned_shortcut_long: &'static str,
    pub canned_shortcut_spaces: &'static str,
    pub canned_no_body: &'static str,
    pub canned_body_long: &'static str,
    pub canned_picker: fn(usize) -> String,
    pub canned_mine: &'static str,
    pub canned_site: &'static str,
    pub canned_new: &'static str,
    pub done: &'static str,
    pub canned_help: &'static str,
    pub canned_site_heading: fn(usize) -> String,
    pub canned_mine_heading: fn(usize) -> String,
    pub none_yet: &'static str,
    pub delete_it: &'static str,
    pub delete_for_everyone: &'static str,
    pub delete: &'static str,
    pub keep: &'static str,
    pub edit: &'static str,
    pub canned_change: &'static str,
    pub canned_add: &'static str,
    pub canned_shortcut_placeholder: &'static str,
    pub canned_body_placeholder: &'static str,
    pub canned_only_me: &'static str,
    pub not_saved: fn(&str) -> String,
    pub saving: &'static str,
    pub save: &'static str,
    /// What `{visitor.name}` becomes for a visitor who gave no name.
    pub visitor_name_fallback: &'static str,

    // Invitation rules (admins).
    pub rules_open: &'static str,
    pub rules_help: &'static str,
    pub rules_new: &'static str,
    pub rules_refresh: &'static str,
    pub rules_loading: &'static str,
    pub rules_heading: fn(usize) -> String,
    pub rules_on: &'static str,
    pub rules_off: &'static str,
    pub rules_turn_on: &'static str,
    pub rules_turn_off: &'static str,
    pub rules_counts: fn(u64, u64, u64, u64) -> String,
    pub rules_rate: fn(u64) -> String,
    pub rules_rate_none: &'static str,
    pub rules_every_visitor: &'static str,
    pub rules_cond_page: fn(&str) -> String,
    pub rules_cond_site_secs: fn(u32) -> String,
    pub rules_cond_page_secs: fn(u32) -> String,
    pub rules_cond_returning: &'static str,
    pub rules_cond_first: &'static str,
    pub rules_cond_referrer: fn(&str) -> String,
    pub rules_cond_campaign: fn(&str) -> String,
    pub rules_cond_attr: fn(&str) -> String,
    pub rules_add: &'static str,
    pub rules_change: &'static str,
    pub rules_name: &'static str,
    pub rules_text: &'static str,
    pub rules_url: &'static str,
    pub rules_site_secs: &'static str,
    pub rules_page_secs: &'static str,
    pub rules_visit_any: &'static str,
    pub rules_visit_returning: &'static str,
    pub rules_visit_first: &'static str,
    pub rules_referrer: &'static str,
    pub rules_campaign: &'static str,
    pub rules_attr: &'static str,
    pub rules_no_name: &'static str,
    pub rules_no_text: &'static str,
    pub rules_bad_secs: &'static str,
    pub rules_bad_attr: &'static str,
    pub rules_not_loaded: fn(&str) -> String,
    pub rules_delete_it: &'static str,

    // Files.
    pub file_gone: &'static str,
    pub cannot_fetch_now: fn(&str) -> String,
    pub could_not_fetch: fn(&str, &str) -> String,
    pub image_unavailable: fn(&str) -> String,
    pub loading_image: &'static str,
    pub open: &'static str,
    pub save_as: &'static str,
    pub downloading: &'static str,
    pub retry: &'static str,
    pub not_sent: fn(&str) -> String,
    pub remove: &'static str,
    pub sending_of: fn(&str, &str) -> String,
    pub send_a_file: &'static str,
    pub clipboard_size_mismatch: &'static str,
    pub cannot_encode_screenshot: fn(&str) -> String,
    pub cannot_read_thumbnail: fn(&str) -> String,
    pub not_readable_image: fn(&str) -> String,
    pub save_as_title: &'static str,
    pub file_fallback_name: &'static str,
    pub file_not_sent: fn(&str) -> String,
    pub too_late_to_cancel: &'static str,
    pub open_chat_to_send_file: &'static str,
    pub could_run_script: fn(&str, &str) -> String,
    pub cannot_save_to: fn(&str, &str) -> String,
    pub link_not_opened: fn(&str) -> String,
    pub could_not_open: fn(&str, &str) -> String,

    // Notifications.
    pub message_from: fn(&str) -> String,
    pub new_chat_waiting: &'static str,
    pub chat_still_waiting: &'static str,
    pub has_waited: fn(&str, &str) -> String,

    // The client core's errors, by kind.
    pub err_no_data_dir: &'static str,
    pub err_account_mismatch: fn(&str, &str) -> String,
    pub err_invalid_config: fn(&str) -> String,
    pub err_too_large: fn(usize, usize) -> String,
    pub err_stopped: &'static str,
    pub err_busy: &'static str,
    pub err_file: fn(&str, &str) -> String,
    pub err_store_too_new: &'static str,

    // System lines.
    pub joined: fn(&str) -> String,
    pub transferred_own: fn(&str, &str) -> String,
    pub transferred_by: fn(&str, &str, &str) -> String,
    pub assigned: fn(&str, &str) -> String,
    pub closed_by_agent: fn(&str) -> String,
    pub closed_by_visitor: &'static str,
    pub requeued_signed_out: fn(&str) -> String,
    pub requeued_disabled: fn(&str) -> String,
    pub requeued_offline: fn(&str) -> String,
    pub left_message_on: fn(Option<&str>, Option<&str>) -> String,
    pub note_line: fn(&str, &str) -> String,
    pub tags_removed: fn(&str) -> String,
    pub tagged: fn(&str, &str) -> String,
    pub invited_by_rule: fn(&str, &str) -> String,
}

impl Texts {
    pub fn theme_choice(&self, c: Choice) -> &'static str {
        match c {
            Choice::Light => self.theme_light,
            Choice::Dark => self.theme_dark,
            Choice::System => self.theme_system,
        }
    }

    pub fn presence(&self, p: Presence) -> &'static str {
        match p {
            Presence::Online => self.presence_online,
            Presence::Away => self.presence_away,
            Presence::Offline => self.presence_offline,
        }
    }

    pub fn role(&self, r: Role) -> &'static str {
        match r {
            Role::Agent => self.role_agent,
            Role::Supervisor => self.role_supervisor,
            Role::Admin => self.role_admin,
        }
    }

    pub fn conversation_state(&self, s: ConversationState) -> &'static str {
        match s {
            ConversationState::Queued => self.state_waiting,
            ConversationState::Active => self.state_open,
            ConversationState::Closed => self.state_closed,
            ConversationState::LeftMessage => self.state_left_message,
        }
    }

    pub fn invitation(&self, s: InvitationState) -> &'static str {
        match s {
            InvitationState::Fired => self.invitation_fired,
            InvitationState::Shown => self.invitation_shown,
            InvitationState::Accepted => self.invitation_accepted,
            InvitationState::Dismissed => self.invitation_dismissed,
        }
    }

    pub fn delivery(&self, s: DeliveryState) -> &'static str {
        match s {
            DeliveryState::Queued => self.delivery_queued,
            DeliveryState::Sent => self.delivery_sent,
            DeliveryState::Delivered => self.delivery_delivered,
            DeliveryState::Failed => self.delivery_failed,
        }
    }

    /// The words beside a long wait's colour ("" while calm).
    pub fn wait_level(&self, l: Level) -> &'static str {
        match l {
            Level::Calm => "",
            Level::Amber => self.long_wait,
            Level::Red => self.very_long_wait,
        }
    }

    /// What a client-core error means for the agent, by its kind; the
    /// details it carries (paths, the OS's own error text) as they are.
    pub fn client_error(&self, e: &ClientError) -> String {
        match e {
            ClientError::Store(StoreError::TooNew { .. }) => self.err_store_too_new.to_owned(),
            ClientError::Store(s) => (self.store_error)(&s.to_string()),
            ClientError::NoDataDir => self.err_no_data_dir.to_owned(),
            ClientError::AccountMismatch {
                stored_server,
                stored_user,
                ..
            } => (self.err_account_mismatch)(stored_user, stored_server),
            ClientError::InvalidConfig(why) => (self.err_invalid_config)(why),
            ClientError::TooLarge { len, max } => (self.err_too_large)(*len, *max),
            ClientError::Stopped => self.err_stopped.to_owned(),
            ClientError::Busy => self.err_busy.to_owned(),
            ClientError::File { path, source } => {
                (self.err_file)(&path.display().to_string(), &source.to_string())
            }
            // A programming error (no tokio runtime), not one an agent
            // can act on: its own words are the most useful.
            ClientError::NoRuntime => e.to_string(),
        }
    }

    /// A system line, in this language.
    pub fn notice(&self, n: &Notice) -> String {
        match n {
            Notice::Joined { agent } => (self.joined)(agent),
            Notice::Transferred { from, to, by } => match from {
                Some(f) if f == by => (self.transferred_own)(f, to),
                Some(f) => (self.transferred_by)(by, f, to),
                None => (self.assigned)(by, to),
            },
            Notice::ClosedByAgent { agent } => (self.closed_by_agent)(agent),
            Notice::ClosedByVisitor => self.closed_by_visitor.to_owned(),
            Notice::Requeued { agent, reason } => match reason {
                LeaveReason::SignedOut => (self.requeued_signed_out)(agent),
                LeaveReason::Disabled => (self.requeued_disabled)(agent),
                LeaveReason::Offline => (self.requeued_offline)(agent),
            },
            Notice::LeftMessage { email, url, .. } => {
                (self.left_message_on)(url.as_deref(), email.as_deref())
            }
            Notice::Note { author, text } => (self.note_line)(author, text),
            Notice::Tagged { by, tags } if tags.is_empty() => (self.tags_removed)(by),
            Notice::Tagged { by, tags } => (self.tagged)(by, &tags.join(", ")),
            Notice::Invited { rule, text } => (self.invited_by_rule)(rule, text),
        }
    }

    /// A system line's body in this language: its notice, or the body as
    /// it is when it is plain text.
    pub fn system_text(&self, body: &str) -> String {
        Notice::parse(body).map_or_else(|| body.to_owned(), |n| self.notice(&n))
    }
}

const EN_MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const EN_WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const ZH_WEEKDAYS: [&str; 7] = ["周一", "周二", "周三", "周四", "周五", "周六", "周日"];

/// `who` at the start of a sentence ("another agent" → "Another agent").
fn capitalised(who: &str) -> String {
    let mut c = who.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn pick(names: &'static [&'static str], i: u8) -> &'static str {
    names.get(usize::from(i)).copied().unwrap_or_default()
}

pub const EN: Texts = Texts {
    today: "Today",
    yesterday: "Yesterday",
    date: |y, m, d, wd| {
        format!(
            "{} {d} {} {y}",
            pick(&EN_WEEKDAYS, wd),
            pick(&EN_MONTHS, m.saturating_sub(1))
        )
    },
    seconds: |s| format!("{s} s"),
    minutes: |m| format!("{m} min"),
    hours_minutes: |h, m| format!("{h} h {m:02} min"),
    days: |d| format!("{d} d"),
    unknown_browser: "Unknown browser",
    unknown_os: "Unknown OS",
    visitor_short: |id| format!("Visitor {id}"),
    visitor_word: "Visitor",
    language_name: |l| match l {
        Language::Arabic => "Arabic",
        Language::Chinese => "Chinese",
        Language::Dutch => "Dutch",
        Language::English => "English",
        Language::French => "French",
        Language::German => "German",
        Language::Hindi => "Hindi",
        Language::Indonesian => "Indonesian",
        Language::Italian => "Italian",
        Language::Japanese => "Japanese",
        Language::Korean => "Korean",
        Language::Malay => "Malay",
        Language::Polish => "Polish",
        Language::Portuguese => "Portuguese",
        Language::Russian => "Russian",
        Language::Spanish => "Spanish",
        Language::Thai => "Thai",
        Language::Turkish => "Turkish",
        Language::Vietnamese => "Vietnamese",
    },

    connected: "Connected",
    reconnecting_in: |s| format!("Reconnecting in {s} s"),
    connecting: "Connecting…",
    offline: "Offline",
    unsent: |n| format!("{n} unsent"),

    login_tagline: "Sign in to your team's chat server",
    server_address: "Server address",
    username: "Username",
    username_placeholder: "username",
    password: "Password",
    password_placeholder: "password",
    sign_in: "Sign in",
    cancel: "Cancel",
    password_in_memory: "The password is kept in memory only and never written to disk.",
    enter_server: "Enter the server address (host:port).",
    enter_username: "Enter your username.",
    enter_password: "Enter your password.",
    cannot_create: |dir, e| format!("Cannot create {dir}: {e}"),
    cannot_reach: |server, reason, s| {
        format!("Cannot reach {server}: {reason}. Retrying in {s} s.")
    },
    wrong_password: "Wrong username or password.",
    account_disabled: "Your account was disabled by an administrator. Your open chats went back \
                       to the queue.",
    password_changed: "Your password was changed. Sign in again with the new one.",
    version_mismatch: |m| {
        format!(
            "Incompatible version: this app and the server speak different protocol versions \
             ({m}). Update the app or the server."
        )
    },
    throttled: |s| format!("Too many failed sign-ins. Trying again in {s} s."),
    login_too_large: |m| {
        format!(
            "The username or password is too long for the server to take ({m}). Shorten it \
             and sign in again."
        )
    },
    sign_in_failed: |code, m| format!("Sign-in failed ({code}): {m}"),
    key_mismatch_refused: "Not connected: the server's key did not match the pinned key.",
    key_not_trusted: "Not connected: the server key was not trusted.",
    signed_out_released: "Signed out. Your open chats were handed on.",
    signed_out_offline: "Signed out while offline. Anything unsent goes out at your next \
                         sign-in; the server hands your open chats on once you have been \
                         offline for its grace period (2 minutes by default).",

    trust_first_title: "First connection to this server",
    trust_first_body: |server| {
        format!(
            "Holdfast has not talked to {server} before. Check that the fingerprint below \
             matches the one your administrator gets from `holdfast-server fingerprint`, then \
             trust it. It is pinned from then on."
        )
    },
    trust_this_server: "Trust this server",
    mismatch_title: "Stop: the server's identity changed",
    mismatch_body: |server| {
        format!(
            "The key {server} presented is not the one pinned on this computer. Someone may \
             be intercepting the connection. Nothing was sent. Ask your administrator before \
             going on."
        )
    },
    pinned_fingerprint: "Pinned fingerprint",
    presented_fingerprint: "Presented fingerprint",
    disconnect: "Disconnect",
    trust_new_key: "The administrator confirmed the new key: trust it",

    theme: "Theme",
    theme_light: "Light",
    theme_dark: "Dark",
    theme_system: "System",
    language: "Language",
    canned_replies: "Canned replies",
    online: "Online",
    away: "Away",
    sign_out: "Sign out",
    signing_out: "Signing out…",
    reconnect_now: "Reconnect now",
    away_notice: "Away: no new chats come to you",
    go_online: "Go online",
    password_to_connect: "password to connect",
    connect: "Connect",
    dismiss: "Dismiss",
    server_refused: |code, m| format!("The server refused that ({code}): {m}"),
    server_error: |code, m| format!("Server error ({code}): {m}"),
    store_error: |m| format!("Local store error: {m}"),
    not_signed_in: "Not signed in: enter your password to connect.",

    hide_lists: "‹ Hide",
    hide_details: "Hide ›",
    hide_lists_tip: "Hide the lists (Ctrl+B)",
    hide_details_tip: "Hide the details (Ctrl+D)",
    show_lists_tip: "Show the lists (Ctrl+B)",
    show_details_tip: "Show the details (Ctrl+D)",
    n_waiting: |n| format!("{n} waiting"),
    n_unread: |n| format!("{n} unread"),

    waiting_heading: |n| format!("Waiting ({n})"),
    no_one_waiting: "No one is waiting.",
    waiting_for: |d| format!("waiting {d}"),
    long_wait: " · long wait",
    very_long_wait: " · very long wait",
    left_a_message_suffix: " · left a message",
    accept: "Accept",

    my_conversations: |n| format!("My conversations ({n})"),
    no_open_conversations: "No open conversations.",
    team_chats: |n| format!("Team chats ({n})"),
    no_team_chats: "No one else has an open chat.",
    team: |n| format!("Team ({n})"),
    you_suffix: " (you)",
    presence_online: "online",
    presence_away: "away",
    presence_offline: "offline",
    role_agent: "agent",
    role_supervisor: "supervisor",
    role_admin: "admin",
    place_on: |at| format!("on {at}"),
    place_left: |at| format!("left the site · last on {at}"),

    visitors_live: |n| format!("Visitors on the site ({n})"),
    visitors_cached: |n| format!("Visitors, as last seen ({n})"),
    nobody_browsing: "Nobody is browsing right now.",
    on_site_for: |d| format!("on site {d}"),
    name_stated: "name stated by the visitor",
    attributes_stated: "attributes stated by the visitor",
    untitled_page: "(untitled page)",
    from_referrer: |r| format!("from {r}"),
    invitation_fired: "sent",
    invitation_shown: "on their screen",
    invitation_accepted: "accepted",
    invitation_dismissed: "closed by the visitor",
    auto_invited: |rule, at, state| format!("Auto-invited by \"{rule}\" at {at} · {state}"),
    details: "Details",
    open_chat: "Open chat",
    chatting_with_you: "Chatting with you",
    chatting_with: |n| format!("Chatting with {n}"),
    waiting_in_queue: "Waiting in the queue",
    invite_to_chat: "Invite to chat",
    edit_invitation: "Edit invitation…",
    invitation_placeholder: "Invitation for this visitor",
    default_invite: "Hi! Can I help you with anything?",
    site_id_verified: |id| format!("✓ ID {id} · verified by the site"),
    id_verified: "✓ ID verified by the site",
    site_id_stated: |id| format!("ID {id} · stated by the visitor"),
    no_email_left: "No email left: your reply waits for the visitor's return.",
    left_on: |u| format!("Left on {u}"),

    details_empty: "Visitor details appear here.",
    stated_by_visitor: "Stated by the visitor",
    name_line: |n| format!("Name: {n}"),
    email_line: |e| format!("Email: {e}"),
    not_identified: "Not identified by the site",
    on_site_now: "On the site now",
    gone: "Gone",
    on_site_since: |d| format!("On site {d}"),
    came_from: |r| format!("Came from {r}"),
    page_trail: "Page trail",
    untitled: "(untitled)",
    not_on_site_now: "Not on the site now.",
    past_conversations: "Past conversations",
    not_loaded: "Not loaded.",
    load_history: "Load history",
    none: "None.",
    a_file: "(a file)",
    visitor_said: |s| format!("Visitor: {s}"),
    note_from: |who, s| format!("Note from {who}: {s}"),
    loading: "Loading…",
    load_older_history: "Load older history",
    history_refused: |code, m| format!("History refused ({code}): {m}"),
    blocked: |r| format!("Blocked: {r}"),
    blocking: "Blocking…",
    unblocking: "Unblocking…",
    unblocked: "Unblocked.",
    not_blocked: |m| format!("Not blocked: {m}"),
    not_unblocked: |m| format!("Not unblocked: {m}"),
    unblock: "Unblock",
    block: "Block…",
    block_explained: "Block this visitor: their chat ends and the widget no longer shows.",
    block_reason: "Reason (required, only agents see it)",
    block_by_address: "Also block their address",
    confirm: "Confirm",

    open_chats: |n| {
        if n == 1 {
            "You have 1 open chat".to_owned()
        } else {
            format!("You have {n} open chats")
        }
    },
    sign_out_one: "A visitor is waiting on you. Hand the chat to a colleague, or let it go back \
                   to the queue, where the next available agent takes it.",
    sign_out_many: "Visitors are waiting on you. Hand the chats to a colleague, or let them go \
                    back to the queue, where the next available agent takes them.",
    sign_out_offline: "You are offline: the server cannot be told now. Your chats go back to \
                       the queue once you have been offline for the server's grace period (2 \
                       minutes by default).",
    return_one: "Return it to the queue and sign out",
    return_many: "Return them to the queue and sign out",
    transfer_one_to: "Or transfer it to:",
    transfer_many_to: "Or transfer them all to:",

    jump_title: "Jump to conversation",
    jump_keys: "↑↓ choose · Enter open · Esc close",
    jump_placeholder: "Name…",
    jump_none: "No conversation has that name.",

    ring_keys_lists: "↑↓ choose · Enter open · Tab next area · Esc chat",
    ring_keys_visitors: "↑↓ choose · Enter details · Tab next area · Esc chat",
    ring_keys_details_invite: "↑↓ PgUp PgDn scroll · Enter invite · Tab next area · Esc chat",
    ring_keys_details_open: "↑↓ PgUp PgDn scroll · Enter open chat · Tab next area · Esc chat",
    ring_keys_details: "↑↓ PgUp PgDn scroll · Tab next area · Esc chat",
    visitor_id_line: |id| format!("Visitor id {id}"),

    pick_a_conversation: "Pick a conversation, accept a waiting chat, or invite a visitor.",
    state_waiting: "waiting",
    state_open: "open",
    state_closed: "closed",
    state_left_message: "left a message",
    serving_read_only: |who| format!("{who} is serving · read-only"),
    serving_now: |who| format!("{who} is serving now"),
    another_agent: "another agent",
    transfer_open: "Transfer…",
    close_conversation: "Close conversation",
    load_earlier: "Load earlier messages",
    note_placeholder: "Write an internal note: only agents see it. Enter adds it.",
    reply_placeholder: "Write a reply. Enter sends, Shift+Enter starts a new line, / finds a \
                        canned reply.",
    internal_note: "Internal note",
    attach: "Attach…",
    add_note: "Add note",
    send: "Send",
    read_only: |who| format!("Read-only: {who} is serving this chat."),
    serves_now: |who| {
        let who = capitalised(who);
        format!(
            "{who} serves this chat now. New messages go to them, not here; the whole chat \
             stays in the visitor's history."
        )
    },
    not_open: "This conversation is not open; replies are off.",
    waits_for_group: |g| {
        format!("This chat waits for {g}: one of its agents or a supervisor takes it.")
    },
    drop_to_send: "Drop the file to send it to this visitor",
    drop_not_here: "Files can be sent only in your open chats",
    transfer_to: "Transfer to:",
    transfer_to_group: "Or to a group (whoever of it is free, or its queue):",
    group_closed: |g| format!("{g} (closed now)"),
    for_group: |g| format!("for {g}"),
    no_transfer_targets: "No one else is online with room for another chat.",
    transfer_note: "Note for the next agent (only agents see it)",
    transfer: "Transfer",
    note_header: |who, at| format!("Note from {who} · agents only · {at}"),
    copy: "Copy",
    copied: "Copied",
    delivery_queued: "Queued",
    delivery_sent: "Sent",
    delivery_delivered: "Delivered",
    delivery_failed: "Failed",
    tags: "Tags",
    add_tag: "Add tag…",
    saving_lower: "saving…",
    visitor_typing: "Visitor is typing…",
    not_sent_yet: |d| format!("Not sent yet: “{d}”"),
    chat_not_here: "That chat is not on this device yet; it appears once the server sends it.",
    serving_this_visitor: |who| {
        let who = capitalised(who);
        format!("{who} is serving this visitor. A supervisor can transfer the chat to you.")
    },

    canned_no_shortcut: "Give it a shortcut.",
    canned_shortcut_long: "A shortcut is at most 32 characters.",
    canned_shortcut_spaces: "A shortcut has no spaces.",
    canned_no_body: "Write the reply.",
    canned_body_long: "A reply is at most 4,000 bytes.",
    canned_picker: |n| {
        format!("Canned replies · ↑↓ to choose, Enter to insert, Esc to close ({n} found)")
    },
    canned_mine: "mine",
    canned_site: "site",
    canned_new: "New reply",
    done: "Done",
    canned_help: "Type / at the start of a reply to insert one. {visitor.name} and \
                  {agent.name} are filled in.",
    canned_site_heading: |n| format!("The site's ({n})"),
    canned_mine_heading: |n| format!("Mine ({n})"),
    none_yet: "None yet.",
    delete_it: "Delete it?",
    delete_for_everyone: "Delete it for everyone?",
    delete: "Delete",
    keep: "Keep",
    edit: "Edit",
    canned_change: "Change the reply",
    canned_add: "Add a reply",
    canned_shortcut_placeholder: "shortcut, e.g. refund",
    canned_body_placeholder: "The reply. {visitor.name} and {agent.name} are filled in.",
    canned_only_me: "Only for me (otherwise for everyone on the site)",
    not_saved: |e| format!("Not saved: {e}"),
    saving: "Saving…",
    save: "Save",
    visitor_name_fallback: "there",

    rules_open: "Invitation rules",
    rules_help: "Each rule invites the visitors it fits to chat, by itself, at most once a visit. The counts are as of the last refresh.",
    rules_new: "New rule",
    rules_refresh: "Refresh",
    rules_loading: "Loading the rules…",
    rules_heading: |n| format!("Rules ({n}), tried in this order"),
    rules_on: "On",
    rules_off: "Off",
    rules_turn_on: "Turn on",
    rules_turn_off: "Turn off",
    rules_counts: |f, s, a, i| format!("Fired {f} · Shown {s} · Accepted {a} · Ignored {i}"),
    rules_rate: |p| format!("{p}% of those shown accepted"),
    rules_rate_none: "Not shown yet: no acceptance rate",
    rules_every_visitor: "Every visitor",
    rules_cond_page: |u| format!("page {u}"),
    rules_cond_site_secs: |s| format!("{s} s on the site"),
    rules_cond_page_secs: |s| format!("{s} s on the page"),
    rules_cond_returning: "returning visitors",
    rules_cond_first: "first visits",
    rules_cond_referrer: |r| format!("referrer contains “{r}”"),
    rules_cond_campaign: |c| format!("campaign “{c}”"),
    rules_cond_attr: |a| format!("attribute {a}"),
    rules_add: "Add a rule",
    rules_change: "Change the rule",
    rules_name: "Name, e.g. pricing",
    rules_text: "What the visitor sees, e.g. Questions about plans?",
    rules_url: "Page, e.g. */pricing* (optional)",
    rules_site_secs: "Seconds on the site (optional)",
    rules_page_secs: "Seconds on the page (optional)",
    rules_visit_any: "Any visit",
    rules_visit_returning: "Returning",
    rules_visit_first: "First visit",
    rules_referrer: "Referrer contains (optional)",
    rules_campaign: "Campaign, utm_campaign (optional)",
    rules_attr: "Attribute, key=value (optional)",
    rules_no_name: "Give it a name.",
    rules_no_text: "Write what the visitor sees.",
    rules_bad_secs: "Seconds are a whole number up to 86400.",
    rules_bad_attr: "An attribute is key=value.",
    rules_not_loaded: |e| format!("Could not load the rules: {e}"),
    rules_delete_it: "Delete this rule? It stops inviting at once.",

    file_gone: "No longer available: expired or removed.",
    cannot_fetch_now: |m| format!("Cannot fetch it now ({m})."),
    could_not_fetch: |code, m| format!("Could not fetch it ({code}): {m}"),
    image_unavailable: |e| format!("Image unavailable. {e}"),
    loading_image: "Loading image…",
    open: "Open",
    save_as: "Save as…",
    downloading: "Downloading…",
    retry: "Retry",
    not_sent: |why| format!("Not sent: {why}"),
    remove: "Remove",
    sending_of: |sent, total| format!("Sending · {sent} of {total}"),
    send_a_file: "Send a file",
    clipboard_size_mismatch: "The clipboard image's size does not match its pixels.",
    cannot_encode_screenshot: |e| format!("Cannot encode the screenshot: {e}"),
    cannot_read_thumbnail: |e| format!("Cannot read the thumbnail: {e}"),
    not_readable_image: |e| format!("Not a readable image: {e}"),
    save_as_title: "Save as",
    file_fallback_name: "file",
    file_not_sent: |e| format!("The file was not sent: {e}"),
    too_late_to_cancel: "Too late to cancel: the file was already sent.",
    open_chat_to_send_file: "Open one of your chats to send a file in it.",
    could_run_script: |name, mime| {
        format!("{name} ({mime}) could run script if opened: use Save as… instead.")
    },
    cannot_save_to: |path, e| format!("Cannot save to {path}: {e}"),
    link_not_opened: |url| format!("Not opened: {url} is not a web or mail link."),
    could_not_open: |url, e| format!("Could not open {url}: {e}"),

    message_from: |name| format!("Message from {name}"),
    new_chat_waiting: "New chat waiting",
    chat_still_waiting: "Chat still waiting",
    has_waited: |name, d| format!("{name} has waited {d}"),

    err_no_data_dir: "This system has no per-user data folder for the local store.",
    err_account_mismatch: |user, server| {
        format!("The local store belongs to {user}@{server}: use one store per account.")
    },
    err_invalid_config: |why| format!("Invalid settings: {why}"),
    err_too_large: |len, max| {
        format!("Too large to send: {len} bytes, more than the {max}-byte maximum.")
    },
    err_stopped: "The connection has stopped: sign in again.",
    err_busy: "Busy: try again in a moment.",
    err_file: |path, e| format!("Cannot keep a copy of {path} to send: {e}"),
    err_store_too_new: "The local store was written by a newer version of Holdfast: update the \
                        app.",

    joined: |a| format!("{a} joined the chat"),
    transferred_own: |from, to| format!("{from} transferred the chat to {to}"),
    transferred_by: |by, from, to| format!("{by} transferred the chat from {from} to {to}"),
    assigned: |by, to| format!("{by} assigned the chat to {to}"),
    closed_by_agent: |a| format!("{a} closed the chat"),
    closed_by_visitor: "The visitor ended the chat",
    requeued_signed_out: |a| format!("{a} signed out; the chat went back to the queue"),
    requeued_disabled: |a| {
        format!("{a} was signed out by an administrator; the chat went back to the queue")
    },
    requeued_offline: |a| format!("{a} went offline; the chat went back to the queue"),
    left_message_on: |url, email| {
        let mut s = "Left a message".to_owned();
        if let Some(u) = url {
            s.push_str(" on ");
            s.push_str(u);
        }
        match email {
            Some(e) => {
                s.push_str(" · reply to ");
                s.push_str(e);
            }
            None => s.push_str(" · no email given"),
        }
        s
    },
    note_line: |who, text| format!("Note from {who}: {text}"),
    tags_removed: |by| format!("{by} removed the chat's tags"),
    tagged: |by, tags| format!("{by} tagged the chat: {tags}"),
    invited_by_rule: |rule, text| format!("Invited by the rule {rule:?}: {text}"),
};

pub const ZH: Texts = Texts {
    today: "今天",
    yesterday: "昨天",
    date: |y, m, d, wd| format!("{y}年{m}月{d}日 {}", pick(&ZH_WEEKDAYS, wd)),
    seconds: |s| format!("{s} 秒"),
    minutes: |m| format!("{m} 分钟"),
    hours_minutes: |h, m| format!("{h} 小时 {m:02} 分钟"),
    days: |d| format!("{d} 天"),
    unknown_browser: "未知浏览器",
    unknown_os: "未知系统",
    visitor_short: |id| format!("访客 {id}"),
    visitor_word: "访客",
    language_name: |l| match l {
        Language::Arabic => "阿拉伯语",
        Language::Chinese => "中文",
        Language::Dutch => "荷兰语",
        Language::English => "英语",
        Language::French => "法语",
        Language::German => "德语",
        Language::Hindi => "印地语",
        Language::Indonesian => "印尼语",
        Language::Italian => "意大利语",
        Language::Japanese => "日语",
        Language::Korean => "韩语",
        Language::Malay => "马来语",
        Language::Polish => "波兰语",
        Language::Portuguese => "葡萄牙语",
        Language::Russian => "俄语",
        Language::Spanish => "西班牙语",
        Language::Thai => "泰语",
        Language::Turkish => "土耳其语",
        Language::Vietnamese => "越南语",
    },

    connected: "已连接",
    reconnecting_in: |s| format!("{s} 秒后重新连接"),
    connecting: "正在连接…",
    offline: "离线",
    unsent: |n| format!("{n} 条未发送"),

    login_tagline: "登录团队的客服服务器",
    server_address: "服务器地址",
    username: "用户名",
    username_placeholder: "用户名",
    password: "密码",
    password_placeholder: "密码",
    sign_in: "登录",
    cancel: "取消",
    password_in_memory: "密码只保存在内存中，从不写入磁盘。",
    enter_server: "请输入服务器地址（主机:端口）。",
    enter_username: "请输入用户名。",
    enter_password: "请输入密码。",
    cannot_create: |dir, e| format!("无法创建 {dir}：{e}"),
    cannot_reach: |server, reason, s| format!("无法连接 {server}：{reason}。{s} 秒后重试。"),
    wrong_password: "用户名或密码错误。",
    account_disabled: "您的账号已被管理员停用。您正在接待的会话已退回排队。",
    password_changed: "您的密码已更改，请使用新密码重新登录。",
    version_mismatch: |m| {
        format!("版本不兼容：本应用与服务器的协议版本不同（{m}）。请更新应用或服务器。")
    },
    throttled: |s| format!("登录失败次数过多，{s} 秒后重试。"),
    login_too_large: |m| format!("用户名或密码过长，服务器无法接受（{m}）。请缩短后重新登录。"),
    sign_in_failed: |code, m| format!("登录失败（{code}）：{m}"),
    key_mismatch_refused: "未连接：服务器密钥与已固定的密钥不一致。",
    key_not_trusted: "未连接：未信任该服务器密钥。",
    signed_out_released: "已退出登录。您正在接待的会话已转交。",
    signed_out_offline: "已在离线状态下退出登录。未发送的内容将在下次登录时发出；您离线超过服务器\
                         的宽限期（默认 2 分钟）后，服务器会转交您正在接待的会话。",

    trust_first_title: "首次连接此服务器",
    trust_first_body: |server| {
        format!(
            "Holdfast 此前从未连接过 {server}。请确认下方的指纹与管理员通过 \
             `holdfast-server fingerprint` 得到的指纹一致，然后再信任。此后该指纹将被固定。"
        )
    },
    trust_this_server: "信任此服务器",
    mismatch_title: "停止：服务器身份已改变",
    mismatch_body: |server| {
        format!(
            "{server} 出示的密钥与本机固定的密钥不一致。可能有人在拦截连接。尚未发送任何内容。\
             继续之前请先询问管理员。"
        )
    },
    pinned_fingerprint: "已固定的指纹",
    presented_fingerprint: "服务器出示的指纹",
    disconnect: "断开连接",
    trust_new_key: "管理员已确认新密钥：信任它",

    theme: "主题",
    theme_light: "浅色",
    theme_dark: "深色",
    theme_system: "跟随系统",
    language: "语言",
    canned_replies: "快捷回复",
    online: "在线",
    away: "离开",
    sign_out: "退出登录",
    signing_out: "正在退出…",
    reconnect_now: "立即重连",
    away_notice: "离开中：不会为您分配新会话",
    go_online: "切换为在线",
    password_to_connect: "输入密码以连接",
    connect: "连接",
    dismiss: "关闭",
    server_refused: |code, m| format!("服务器拒绝了该操作（{code}）：{m}"),
    server_error: |code, m| format!("服务器错误（{code}）：{m}"),
    store_error: |m| format!("本地存储错误：{m}"),
    not_signed_in: "未登录：请输入密码以连接。",

    hide_lists: "‹ 隐藏",
    hide_details: "隐藏 ›",
    hide_lists_tip: "隐藏列表（Ctrl+B）",
    hide_details_tip: "隐藏详情（Ctrl+D）",
    show_lists_tip: "显示列表（Ctrl+B）",
    show_details_tip: "显示详情（Ctrl+D）",
    n_waiting: |n| format!("{n} 人排队中"),
    n_unread: |n| format!("{n} 条未读"),

    waiting_heading: |n| format!("排队中（{n}）"),
    no_one_waiting: "暂无排队访客。",
    waiting_for: |d| format!("已等待 {d}"),
    long_wait: " · 等待较久",
    very_long_wait: " · 等待过久",
    left_a_message_suffix: " · 留言",
    accept: "接入",

    my_conversations: |n| format!("我的会话（{n}）"),
    no_open_conversations: "暂无进行中的会话。",
    team_chats: |n| format!("团队会话（{n}）"),
    no_team_chats: "其他客服暂无进行中的会话。",
    team: |n| format!("团队（{n}）"),
    you_suffix: "（我）",
    presence_online: "在线",
    presence_away: "离开",
    presence_offline: "离线",
    role_agent: "客服",
    role_supervisor: "主管",
    role_admin: "管理员",
    place_on: |at| format!("正在浏览 {at}"),
    place_left: |at| format!("已离开网站 · 最后浏览 {at}"),

    visitors_live: |n| format!("网站访客（{n}）"),
    visitors_cached: |n| format!("访客（上次所见，{n}）"),
    nobody_browsing: "当前没有人在浏览网站。",
    on_site_for: |d| format!("已停留 {d}"),
    name_stated: "姓名由访客自行提供",
    attributes_stated: "属性由访客自行提供",
    untitled_page: "（无标题页面）",
    from_referrer: |r| format!("来自 {r}"),
    invitation_fired: "已发送",
    invitation_shown: "已显示在访客屏幕上",
    invitation_accepted: "已接受",
    invitation_dismissed: "访客已关闭",
    auto_invited: |rule, at, state| format!("{at} 由规则“{rule}”自动邀请 · {state}"),
    details: "详情",
    open_chat: "打开会话",
    chatting_with_you: "正在与您对话",
    chatting_with: |n| format!("正在与 {n} 对话"),
    waiting_in_queue: "正在排队",
    invite_to_chat: "邀请对话",
    edit_invitation: "编辑邀请…",
    invitation_placeholder: "发给这位访客的邀请",
    default_invite: "您好！请问有什么可以帮您？",
    site_id_verified: |id| format!("✓ ID {id} · 已由网站验证"),
    id_verified: "✓ ID 已由网站验证",
    site_id_stated: |id| format!("ID {id} · 由访客自行提供"),
    no_email_left: "未留邮箱：您的回复将等访客回来时看到。",
    left_on: |u| format!("留言页面：{u}"),

    details_empty: "访客详情将显示在这里。",
    stated_by_visitor: "访客自行提供",
    name_line: |n| format!("姓名：{n}"),
    email_line: |e| format!("邮箱：{e}"),
    not_identified: "网站未识别此访客",
    on_site_now: "当前在网站上",
    gone: "已离开",
    on_site_since: |d| format!("本次停留 {d}"),
    came_from: |r| format!("来源：{r}"),
    page_trail: "浏览轨迹",
    untitled: "（无标题）",
    not_on_site_now: "当前不在网站上。",
    past_conversations: "历史会话",
    not_loaded: "未加载。",
    load_history: "加载历史记录",
    none: "无。",
    a_file: "（文件）",
    visitor_said: |s| format!("访客：{s}"),
    note_from: |who, s| format!("{who} 的备注：{s}"),
    loading: "正在加载…",
    load_older_history: "加载更早的记录",
    history_refused: |code, m| format!("历史记录请求被拒绝（{code}）：{m}"),
    blocked: |r| format!("已屏蔽：{r}"),
    blocking: "正在屏蔽…",
    unblocking: "正在解除屏蔽…",
    unblocked: "已解除屏蔽。",
    not_blocked: |m| format!("未能屏蔽：{m}"),
    not_unblocked: |m| format!("未能解除屏蔽：{m}"),
    unblock: "解除屏蔽",
    block: "屏蔽…",
    block_explained: "屏蔽此访客：其会话将结束，网页聊天窗口不再显示。",
    block_reason: "原因（必填，仅客服可见）",
    block_by_address: "同时屏蔽其 IP 地址",
    confirm: "确认",

    open_chats: |n| format!("您有 {n} 个进行中的会话"),
    sign_out_one: "有一位访客正在等您回复。您可以把会话转接给同事，或退回排队，由下一位空闲的客服接入。",
    sign_out_many: "有访客正在等您回复。您可以把这些会话转接给同事，或退回排队，由下一位空闲的客服接入。",
    sign_out_offline: "您当前处于离线状态，无法通知服务器。您离线超过服务器的宽限期（默认 2 分钟）后，\
                       您的会话将退回排队。",
    return_one: "退回排队并退出登录",
    return_many: "全部退回排队并退出登录",
    transfer_one_to: "或转接给：",
    transfer_many_to: "或全部转接给：",

    jump_title: "跳转到会话",
    jump_keys: "↑↓ 选择 · Enter 打开 · Esc 关闭",
    jump_placeholder: "姓名…",
    jump_none: "没有这个名字的会话。",

    ring_keys_lists: "↑↓ 选择 · Enter 打开 · Tab 下一区域 · Esc 回到对话",
    ring_keys_visitors: "↑↓ 选择 · Enter 查看详情 · Tab 下一区域 · Esc 回到对话",
    ring_keys_details_invite: "↑↓ PgUp PgDn 滚动 · Enter 邀请 · Tab 下一区域 · Esc 回到对话",
    ring_keys_details_open: "↑↓ PgUp PgDn 滚动 · Enter 打开对话 · Tab 下一区域 · Esc 回到对话",
    ring_keys_details: "↑↓ PgUp PgDn 滚动 · Tab 下一区域 · Esc 回到对话",
    visitor_id_line: |id| format!("访客编号 {id}"),

    pick_a_conversation: "请选择一个会话、接入排队中的访客，或邀请访客对话。",
    state_waiting: "排队中",
    state_open: "进行中",
    state_closed: "已结束",
    state_left_message: "留言",
    serving_read_only: |who| format!("{who} 正在接待 · 只读"),
    serving_now: |who| format!("{who} 正在接待"),
    another_agent: "其他客服",
    transfer_open: "转接…",
    close_conversation: "结束会话",
    load_earlier: "加载更早的消息",
    note_placeholder: "填写内部备注：仅客服可见。按 Enter 添加。",
    reply_placeholder: "输入回复。Enter 发送，Shift+Enter 换行，输入 / 查找快捷回复。",
    internal_note: "内部备注",
    attach: "附件…",
    add_note: "添加备注",
    send: "发送",
    read_only: |who| format!("只读：{who} 正在接待此会话。"),
    serves_now: |who| {
        format!(
            "{who} 正在接待此会话。新消息会发给对方，不会出现在这里；完整会话保留在访客的历史记录中。"
        )
    },
    not_open: "此会话未在进行中，无法回复。",
    waits_for_group: |g| format!("此会话正在等待「{g}」分组：由该组客服或主管接入。"),
    drop_to_send: "松开即可把文件发给这位访客",
    drop_not_here: "只能在您进行中的会话里发送文件",
    transfer_to: "转接给：",
    transfer_to_group: "或转到分组（由该组空闲的客服接入，否则在该组排队）：",
    group_closed: |g| format!("{g}（非工作时间）"),
    for_group: |g| format!("分组：{g}"),
    no_transfer_targets: "没有其他在线且仍有空位的客服。",
    transfer_note: "给下一位客服的备注（仅客服可见）",
    transfer: "转接",
    note_header: |who, at| format!("{who} 的备注 · 仅客服可见 · {at}"),
    copy: "复制",
    copied: "已复制",
    delivery_queued: "待发送",
    delivery_sent: "已发送",
    delivery_delivered: "已送达",
    delivery_failed: "发送失败",
    tags: "标签",
    add_tag: "添加标签…",
    saving_lower: "正在保存…",
    visitor_typing: "访客正在输入…",
    not_sent_yet: |d| format!("尚未发送：“{d}”"),
    chat_not_here: "此会话尚未同步到本机；服务器发来后即会显示。",
    serving_this_visitor: |who| format!("{who} 正在接待这位访客。主管可以把会话转接给您。"),

    canned_no_shortcut: "请设置一个快捷词。",
    canned_shortcut_long: "快捷词最多 32 个字符。",
    canned_shortcut_spaces: "快捷词不能包含空格。",
    canned_no_body: "请填写回复内容。",
    canned_body_long: "回复最多 4,000 字节。",
    canned_picker: |n| format!("快捷回复 · ↑↓ 选择，Enter 插入，Esc 关闭（找到 {n} 条）"),
    canned_mine: "我的",
    canned_site: "全站",
    canned_new: "新建回复",
    done: "完成",
    canned_help: "在回复开头输入 / 即可插入快捷回复。{visitor.name} 和 {agent.name} 会自动填入。",
    canned_site_heading: |n| format!("全站快捷回复（{n}）"),
    canned_mine_heading: |n| format!("我的快捷回复（{n}）"),
    none_yet: "暂无。",
    delete_it: "确定删除？",
    delete_for_everyone: "确定为所有人删除？",
    delete: "删除",
    keep: "保留",
    edit: "编辑",
    canned_change: "修改回复",
    canned_add: "添加回复",
    canned_shortcut_placeholder: "快捷词，例如 refund",
    canned_body_placeholder: "回复内容。{visitor.name} 和 {agent.name} 会自动填入。",
    canned_only_me: "仅自己可用（否则全站客服可用）",
    not_saved: |e| format!("未保存：{e}"),
    saving: "正在保存…",
    save: "保存",
    visitor_name_fallback: "朋友",

    rules_open: "邀请规则",
    rules_help: "每条规则会自动邀请符合条件的访客聊天，每次访问最多一次。计数为上次刷新时的数据。",
    rules_new: "新建规则",
    rules_refresh: "刷新",
    rules_loading: "正在加载规则…",
    rules_heading: |n| format!("规则（{n}），按此顺序匹配"),
    rules_on: "已启用",
    rules_off: "已停用",
    rules_turn_on: "启用",
    rules_turn_off: "停用",
    rules_counts: |f, s, a, i| format!("已发出 {f} · 已展示 {s} · 已接受 {a} · 已忽略 {i}"),
    rules_rate: |p| format!("展示后接受率 {p}%"),
    rules_rate_none: "尚未展示：暂无接受率",
    rules_every_visitor: "所有访客",
    rules_cond_page: |u| format!("页面 {u}"),
    rules_cond_site_secs: |s| format!("在网站停留 {s} 秒"),
    rules_cond_page_secs: |s| format!("在页面停留 {s} 秒"),
    rules_cond_returning: "回访访客",
    rules_cond_first: "首次访问",
    rules_cond_referrer: |r| format!("来源包含“{r}”"),
    rules_cond_campaign: |c| format!("推广活动“{c}”"),
    rules_cond_attr: |a| format!("属性 {a}"),
    rules_add: "添加规则",
    rules_change: "修改规则",
    rules_name: "名称，例如 pricing",
    rules_text: "访客看到的邀请语，例如：对套餐有疑问吗？",
    rules_url: "页面，例如 */pricing*（可选）",
    rules_site_secs: "在网站停留秒数（可选）",
    rules_page_secs: "在页面停留秒数（可选）",
    rules_visit_any: "任何访问",
    rules_visit_returning: "回访",
    rules_visit_first: "首次访问",
    rules_referrer: "来源包含（可选）",
    rules_campaign: "推广活动 utm_campaign（可选）",
    rules_attr: "属性，key=value（可选）",
    rules_no_name: "请填写名称。",
    rules_no_text: "请填写邀请语。",
    rules_bad_secs: "秒数须为不超过 86400 的整数。",
    rules_bad_attr: "属性格式为 key=value。",
    rules_not_loaded: |e| format!("无法加载规则：{e}"),
    rules_delete_it: "删除此规则？它将立即停止邀请。",

    file_gone: "文件已不可用：已过期或被删除。",
    cannot_fetch_now: |m| format!("暂时无法获取（{m}）。"),
    could_not_fetch: |code, m| format!("获取失败（{code}）：{m}"),
    image_unavailable: |e| format!("图片不可用。{e}"),
    loading_image: "正在加载图片…",
    open: "打开",
    save_as: "另存为…",
    downloading: "正在下载…",
    retry: "重试",
    not_sent: |why| format!("未发送：{why}"),
    remove: "移除",
    sending_of: |sent, total| format!("正在发送 · {sent} / {total}"),
    send_a_file: "发送文件",
    clipboard_size_mismatch: "剪贴板图片的尺寸与像素数据不符。",
    cannot_encode_screenshot: |e| format!("无法编码截图：{e}"),
    cannot_read_thumbnail: |e| format!("无法读取缩略图：{e}"),
    not_readable_image: |e| format!("无法识别的图片：{e}"),
    save_as_title: "另存为",
    file_fallback_name: "文件",
    file_not_sent: |e| format!("文件未发送：{e}"),
    too_late_to_cancel: "无法取消：文件已发送。",
    open_chat_to_send_file: "请先打开您的一个会话，再在其中发送文件。",
    could_run_script: |name, mime| format!("{name}（{mime}）打开后可能运行脚本：请改用“另存为…”。"),
    cannot_save_to: |path, e| format!("无法保存到 {path}：{e}"),
    link_not_opened: |url| format!("未打开：{url} 不是网页或邮件链接。"),
    could_not_open: |url, e| format!("无法打开 {url}：{e}"),

    message_from: |name| format!("来自 {name} 的消息"),
    new_chat_waiting: "有新访客排队",
    chat_still_waiting: "访客仍在排队",
    has_waited: |name, d| format!("{name} 已等待 {d}"),

    err_no_data_dir: "本系统没有可供本地存储使用的用户数据目录。",
    err_account_mismatch: |user, server| {
        format!("本地存储属于 {user}@{server}：每个账号请使用各自的存储。")
    },
    err_invalid_config: |why| format!("设置无效：{why}"),
    err_too_large: |len, max| format!("内容过大，无法发送：{len} 字节，超过上限 {max} 字节。"),
    err_stopped: "连接已停止：请重新登录。",
    err_busy: "系统繁忙：请稍后再试。",
    err_file: |path, e| format!("无法保存 {path} 的副本以便发送：{e}"),
    err_store_too_new: "本地存储由更新版本的 Holdfast 写入：请更新应用。",

    joined: |a| format!("{a} 加入了会话"),
    transferred_own: |from, to| format!("{from} 将会话转接给了 {to}"),
    transferred_by: |by, from, to| format!("{by} 将会话从 {from} 转接给了 {to}"),
    assigned: |by, to| format!("{by} 将会话分配给了 {to}"),
    closed_by_agent: |a| format!("{a} 结束了会话"),
    closed_by_visitor: "访客结束了会话",
    requeued_signed_out: |a| format!("{a} 已退出登录，会话已退回排队"),
    requeued_disabled: |a| format!("{a} 被管理员强制退出，会话已退回排队"),
    requeued_offline: |a| format!("{a} 已离线，会话已退回排队"),
    left_message_on: |url, email| {
        let mut s = "访客留言".to_owned();
        if let Some(u) = url {
            s.push('（');
            s.push_str(u);
            s.push('）');
        }
        match email {
            Some(e) => {
                s.push_str(" · 回复至 ");
                s.push_str(e);
            }
            None => s.push_str(" · 未留邮箱"),
        }
        s
    },
    note_line: |who, text| format!("{who} 的备注：{text}"),
    tags_removed: |by| format!("{by} 移除了会话的标签"),
    tagged: |by, tags| format!("{by} 为会话添加了标签：{tags}"),
    invited_by_rule: |rule, text| format!("由规则“{rule}”邀请：{text}"),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_locale_picks_chinese_for_any_chinese() {
        for zh in [
            "zh_CN.UTF-8",
            "zh-Hans",
            "zh-Hans-CN",
            "zh_TW",
            "zh-Hant-TW",
            "zh",
            "ZH_cn",
            " zh_SG.utf8 ",
            "zh_CN@pinyin",
        ] {
            assert_eq!(Lang::from_locale(zh), Lang::Zh, "{zh:?}");
        }
        for en in [
            "en_US",
            "en-GB",
            "en_US.UTF-8",
            "C",
            "C.UTF-8",
            "POSIX",
            "",
            "fr_FR",
            "zu_ZA",
            "zha",
        ] {
            assert_eq!(Lang::from_locale(en), Lang::En, "{en:?}");
        }
    }

    #[test]
    fn a_visitors_language_is_named_in_the_agents_and_defaults_follow_the_visitor() {
        set(Lang::En);
        assert_eq!(language_name("zh-CN"), "Chinese");
        assert_eq!(language_name("en-GB"), "English");
        assert_eq!(language_name("tlh"), "tlh", "no name: the tag itself");
        set(Lang::Zh);
        assert_eq!(language_name("zh-Hant-TW"), "中文");
        assert_eq!(language_name("en"), "英语");
        assert_eq!(language_name("pt-BR"), "葡萄牙语");
        // The agent's app is Chinese; an English visitor is written to in
        // English, a Chinese one in Chinese, an unknown one in the app's.
        assert_eq!(for_visitor(Some("en-US")).default_invite, EN.default_invite);
        assert_eq!(for_visitor(Some("fr")).visitor_name_fallback, "there");
        assert_eq!(for_visitor(None).visitor_name_fallback, "朋友");
        set(Lang::En);
        assert_eq!(for_visitor(Some("zh-TW")).visitor_name_fallback, "朋友");
        assert_eq!(for_visitor(None).default_invite, EN.default_invite);
    }

    /// Kept words follow the language in force when drawn; data stays.
    #[test]
    fn kept_words_follow_a_switch() {
        let server = String::from("chat.example:7070");
        let live = Words::new(move |t| (t.cannot_reach)(&server, "refused", 3));
        let both = Words::worded(|t| t.err_busy.to_owned());
        let data = Words::fixed("the server's own words");
        set(Lang::En);
        assert_eq!(
            live.text(),
            "Cannot reach chat.example:7070: refused. Retrying in 3 s."
        );
        assert_eq!(both.text(), EN.err_busy);
        set(Lang::Zh);
        assert_eq!(
            live.text(),
            "无法连接 chat.example:7070：refused。3 秒后重试。"
        );
        assert_eq!(both.text(), ZH.err_busy);
        assert_eq!(data.text(), "the server's own words");
        set(Lang::En);
    }

    #[test]
    fn the_language_is_per_thread() {
        set(Lang::Zh);
        assert_eq!(tr().today, "今天");
        let other = std::thread::spawn(|| tr().today).join().unwrap_or_default();
        assert_eq!(other, "Today");
        set(Lang::En);
        assert_eq!(tr().today, "Today");
    }

    /// System lines read the same in English as the protocol crate's own
    /// wording, and in Chinese as Chinese.
    #[test]
    fn system_lines_in_both_languages() {
        let lines = [
            Notice::Joined {
                agent: "Ann".into(),
            },
            Notice::Transferred {
                from: Some("Ann".into()),
                to: "Bo".into(),
                by: "Ann".into(),
            },
            Notice::Transferred {
                from: Some("Ann".into()),
                to: "Bo".into(),
                by: "Cy".into(),
            },
            Notice::Transferred {
                from: None,
                to: "Bo".into(),
                by: "Cy".into(),
            },
            Notice::ClosedByAgent {
                agent: "Ann".into(),
            },
            Notice::ClosedByVisitor,
            Notice::Requeued {
                agent: "Ann".into(),
                reason: LeaveReason::Offline,
            },
            Notice::LeftMessage {
                email: Some("v@example.com".into()),
                url: Some("https://shop.example/cart".into()),
                title: None,
            },
            Notice::LeftMessage {
                email: None,
                url: None,
                title: None,
            },
            Notice::Tagged {
                by: "Ann".into(),
                tags: vec!["vip".into(), "refund".into()],
            },
            Notice::Tagged {
                by: "Ann".into(),
                tags: vec![],
            },
        ];
        for n in &lines {
            assert_eq!(EN.notice(n), n.english());
            let zh = ZH.notice(n);
            assert!(
                zh.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
                "{zh}"
            );
        }
        assert_eq!(
            ZH.system_text(&Notice::ClosedByVisitor.to_body()),
            "访客结束了会话"
        );
        assert_eq!(ZH.system_text("plain words"), "plain words");
    }

    #[test]
    fn an_unknown_language_in_the_prefs_follows_the_os() {
        #[derive(Deserialize)]
        struct P {
            #[serde(default, deserialize_with = "lenient_lang")]
            lang: Option<Lang>,
        }
        let p = |s: &str| serde_json::from_str::<P>(s).map(|p| p.lang).ok();
        assert_eq!(p(r#"{"lang":"zh"}"#), Some(Some(Lang::Zh)));
        assert_eq!(p(r#"{"lang":"en"}"#), Some(Some(Lang::En)));
        assert_eq!(p(r#"{"lang":"fr"}"#), Some(None));
        assert_eq!(p(r#"{"lang":null}"#), Some(None));
        assert_eq!(p(r#"{"lang":7}"#), Some(None));
        assert_eq!(p("{}"), Some(None));
    }

    /// The guard against a new hard-coded English text: no string literal
    /// in the app's drawing code reads as English words. A literal is
    /// English when, with its `{…}` holes taken out, it has a capitalised
    /// word or two words side by side ("Load history", "no one"). Ids
    /// ("conv-{id}"), file names, units and symbols pass; log lines and
    /// comments are not looked at; what is legitimately not a word on
    /// screen is listed in `ALLOWED`.
    #[test]
    fn no_english_literal_outside_the_catalog() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ui");
        let mut files = vec![];
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let path = entry.map(|e| e.path()).unwrap_or_default();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "rs")
                    // The catalog itself, the contrast test's pair names,
                    // and the desk's own unit tests.
                    && !["i18n.rs", "theme.rs", "tests.rs"]
                        .iter()
                        .any(|f| path.ends_with(f))
                {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 20, "{files:?}");
        let mut found = vec![];
        for path in files {
            let src = std::fs::read_to_string(&path).unwrap_or_default();
            // Unit tests say what they expect in English; only the code
            // above them draws.
            let code = src.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let t = line.trim_start();
                // Logs, attributes, ids and `Debug` output are not on screen.
                let skip = [
                    "//",
                    "#[",
                    "tracing::",
                    "eprintln!",
                    ".id(",
                    "panic!",
                    "debug_tuple(",
                    "write!(f",
                ];
                if skip.iter().any(|s| t.starts_with(s) || line.contains(s)) {
                    continue;
                }
                for lit in literals(line) {
                    if reads_as_english(&lit) {
                        found.push(format!("{}:{}: {lit:?}", path.display(), n + 1));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "English on screen outside the catalog (ui/i18n.rs):\n{}",
            found.join("\n")
        );
    }

    /// The string literals on one line (a literal continued on the next
    /// line is seen up to its end here, which is enough to judge it).
    fn literals(line: &str) -> Vec<String> {
        let mut out = vec![];
        let mut chars = line.chars().peekable();
        let mut prev = ' ';
        while let Some(c) = chars.next() {
            // A char literal ('"') or a byte string is not a text.
            if c == '"' && prev != '\'' && prev != 'b' && prev != 'r' {
                let mut lit = String::new();
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                        continue;
                    } else if c == '"' {
                        break;
                    }
                    lit.push(c);
                }
                out.push(lit);
                prev = '"';
                continue;
            }
            prev = c;
        }
        out
    }

    /// Names that are the same in every language: the product's, the
    /// languages' own, and the browsers and systems a User-Agent names.
    const NAMES: [&str; 14] = [
        "Holdfast",
        "English",
        "Edge",
        "Opera",
        "Firefox",
        "Chrome",
        "Safari",
        "Windows",
        "Mac",
        "Macintosh",
        "Android",
        "ChromeOS",
        "CrOS",
        "Linux",
    ];

    fn reads_as_english(lit: &str) -> bool {
        // A token, a path or an address ("Firefox/", "a::b", "x.dll,Y",
        // "host:7070"), not prose.
        if !lit.contains(char::is_whitespace) && lit.contains(['/', '.', ':', '_', ',']) {
            return false;
        }
        let mut bare = String::new();
        let mut depth = 0;
        for c in lit.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                c if depth == 0 => bare.push(c),
                _ => {}
            }
        }
        let words: Vec<&str> = bare
            .split(|c: char| !c.is_ascii_alphabetic() && c != '\'')
            .filter(|w| w.len() >= 2)
            .collect();
        // Capitalised, and not an abbreviation ("KB", "ID") or a name.
        let capitalised = words.iter().any(|w| {
            w.starts_with(|c: char| c.is_ascii_uppercase())
                && w.chars().any(|c| c.is_ascii_lowercase())
                && !NAMES.contains(w)
        });
        let side_by_side = bare
            .split_whitespace()
            .map(|w| w.trim_end_matches(|c: char| "',.:;!?…".contains(c)))
            .filter(|w| {
                w.len() >= 2
                    && w.chars().all(|c| c.is_ascii_alphabetic() || c == '\'')
                    && w.chars().any(|c| c.is_ascii_lowercase())
                    && !NAMES.contains(w)
            });
        capitalised || side_by_side.count() >= 2
    }

    #[test]
    fn the_guard_knows_english_when_it_sees_it() {
        for en in [
            "Load history",
            "no one is waiting",
            "Waiting ({})",
            "Sign in",
            "Version",
        ] {
            assert!(reads_as_english(en), "{en:?}");
        }
        for not in [
            "conv-{id}",
            "{} · {}",
            "#{} {}",
            "screenshot-{now_ms}.png",
            "",
            "✓",
            "/{}",
            "{pct}%",
            "KB",
            "Firefox {v}",
            "Version/",
            "localhost:7070",
            "中文",
        ] {
            assert!(!reads_as_english(not), "{not:?}");
        }
        assert_eq!(
            literals(r#"small(format!("a {b}")).id("x-{}"); let c = '"'; "d\"e""#),
            ["a {b}", "x-{}", "d\"e"]
        );
    }
}
