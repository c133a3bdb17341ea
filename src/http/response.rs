//! Building answers with the exact bytes and headers of COMPAT §1.3 and §1.6.

use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Value};

use crate::laravel::json::{to_php_json, to_php_json_pretty};
use crate::laravel::text::html_escape;

pub const JSON: &str = "application/json";
pub const HTML: &str = "text/html; charset=UTF-8";

/// A body with its content type (no charset for JSON, like Laravel).
pub fn with_body(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut res = HttpResponse::with_body(status, body).map_into_boxed_body();
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// A compact JSON answer (§3.1).
pub fn json(status: StatusCode, value: &Value) -> HttpResponse {
    with_body(status, JSON, to_php_json(value))
}

/// A pretty `{"message": …}` error body (§3.2).
pub fn pretty_message(status: StatusCode, message: &str) -> HttpResponse {
    with_body(
        status,
        JSON,
        to_php_json_pretty(&json!({ "message": message })),
    )
}

/// The minimal HTML error page non-JSON clients get for PHP-mirroring errors (§1.3).
pub fn html_error(status: StatusCode) -> HttpResponse {
    let reason = match status.as_u16() {
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        _ => "Server Error",
    };
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{reason}</title></head>\n<body>{} | {reason}</body>\n</html>\n",
        status.as_u16()
    );
    with_body(status, HTML, body)
}

/// A PHP-mirroring error: pretty JSON for JSON clients, the HTML page otherwise.
pub fn mirrored_error(status: StatusCode, message: &str, json_client: bool) -> HttpResponse {
    if json_client {
        pretty_message(status, message)
    } else {
        html_error(status)
    }
}

/// Sanctum's failure answer (§1.2 step 3, K3): 401 JSON or a 302 to `<root>/login`.
pub fn unauthenticated(json_client: bool, root: &str) -> HttpResponse {
    if json_client {
        return with_body(
            StatusCode::UNAUTHORIZED,
            JSON,
            "{\"message\":\"Unauthenticated.\"}".into(),
        );
    }
    let location = format!("{root}/login");
    let e = html_escape(&location);
    let body = format!(
        "<!DOCTYPE html>\n<html>\n    <head>\n        <meta charset=\"UTF-8\" />\n        <meta http-equiv=\"refresh\" content=\"0;url='{e}'\" />\n\n        <title>Redirecting to {e}</title>\n    </head>\n    <body>\n        Redirecting to <a href=\"{e}\">{e}</a>.\n    </body>\n</html>"
    );
    let mut res = with_body(StatusCode::FOUND, "text/html; charset=utf-8", body);
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut()
            .insert(actix_web::http::header::LOCATION, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(res: HttpResponse) -> String {
        let bytes = res.into_body().try_into_bytes().unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn redirect_page_matches_symfony() {
        let res = unauthenticated(false, "http://127.0.0.1:8081");
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(
            res.headers().get("location").unwrap(),
            "http://127.0.0.1:8081/login"
        );
        let body = body_of(res);
        assert!(body.starts_with("<!DOCTYPE html>\n<html>\n    <head>"));
        assert_eq!(body.matches("http://127.0.0.1:8081/login").count(), 4);
        assert!(body.ends_with("</html>"));
    }

    #[test]
    fn error_pages() {
        assert_eq!(
            body_of(html_error(StatusCode::NOT_FOUND)),
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Not Found</title></head>\n<body>404 | Not Found</body>\n</html>\n"
        );
        assert_eq!(
            body_of(pretty_message(
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Attempts."
            )),
            "{\n    \"message\": \"Too Many Attempts.\"\n}"
        );
    }
}
