//! What a chat handler is given (COMPAT §5): the request as the pipeline established it.

use crate::auth::sanctum::AuthUser;
use crate::http::input::Input;
use crate::http::request::RequestInfo;
use crate::state::AppState;

/// What a chat handler gets once the pipeline (steps 0–7) has passed.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    /// `U`, the authenticated user.
    pub user: AuthUser,
    pub info: &'a RequestInfo,
    /// The request locale (§1.2 step 6).
    pub locale: String,
    pub input: Input,
}

impl Ctx<'_> {
    pub fn root(&self) -> &str {
        &self.info.root
    }

    /// `now` as written to TIMESTAMP columns (`YYYY-MM-DD HH:MM:SS` in APP_TIMEZONE). Made when
    /// asked for: a poll answered from memory never needs it.
    pub fn now_s(&self) -> String {
        self.info.now_s()
    }

    /// `T(text)` in the request locale.
    pub async fn t(&self, text: &str) -> Result<String, sqlx::Error> {
        self.state
            .translator
            .translate(text, &self.locale, &self.now_s(), self.info.mode.writes())
            .await
    }
}
