//! Pagination: `first` (default 20, 1..=100), `after` / `before` cursors.
//!
//! Items are kept in creation order and each carries a creation sequence
//! number; a cursor is an opaque (hex) encoding of one. `next` is the cursor
//! to pass as `after` for the following page (absent on the last page);
//! `prev` the cursor to pass as `before` for the preceding page (absent on the
//! first page). `before` returns the `first` items just before the cursor.

use serde_json::{Value, json};

use super::error::ApiError;

pub const DEFAULT_FIRST: usize = 20;
pub const MAX_FIRST: usize = 100;
const CURSOR_PREFIX: &str = "cursor:v1:";

/// Query parameters, as decoded from the raw query string.
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub first: usize,
    pub after: Option<u64>,
    pub before: Option<u64>,
}

pub fn encode_cursor(seq: u64) -> String {
    hex::encode(format!("{CURSOR_PREFIX}{seq}"))
}

fn decode_cursor(s: &str) -> Option<u64> {
    let bytes = hex::decode(s).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(CURSOR_PREFIX)?.parse().ok()
}

impl PageRequest {
    pub fn from_query(q: &Query) -> Result<Self, ApiError> {
        let first = match q.get("first") {
            None => DEFAULT_FIRST,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_FIRST).contains(&n) => n,
                _ => {
                    return Err(ApiError::field(
                        "first",
                        format!("must be an integer from 1 to {MAX_FIRST}"),
                    ));
                }
            },
        };
        let cursor = |key: &str| -> Result<Option<u64>, ApiError> {
            match q.get(key) {
                None | Some("") => Ok(None),
                Some(s) => decode_cursor(s)
                    .map(Some)
                    .ok_or_else(|| ApiError::field(key, "is not a valid cursor")),
            }
        };
        let after = cursor("after")?;
        let before = cursor("before")?;
        if after.is_some() && before.is_some() {
            return Err(ApiError::field(
                "before",
                "after and before cannot be used together",
            ));
        }
        Ok(Self {
            first,
            after,
            before,
        })
    }
}

/// The paging parameters of the paged list calls.
pub const PAGING_PARAMETERS: [&str; 3] = ["first", "after", "before"];

/// For the list calls that take no paging parameters (a project environment's connection
/// templates and static connections): they answer every item in one page, so a client that
/// sends `first`, `after` or `before` expects paging that never happens. Refused (strict).
pub fn no_paging(q: &Query) -> Result<(), ApiError> {
    match PAGING_PARAMETERS.iter().find(|p| q.get(p).is_some()) {
        None => Ok(()),
        Some(p) => Err(ApiError::field(
            *p,
            "this list takes no paging parameters: it answers every item in one page",
        )),
    }
}

/// Every item in one page: `{totalCount, items}`, `next` and `prev` never set.
pub fn whole(items: Vec<Value>) -> Value {
    json!({ "totalCount": items.len(), "items": items })
}

/// One page of `items` (`(sequence, JSON)`, in creation order) as
/// `{totalCount, next?, prev?, items}`.
pub fn page(items: Vec<(u64, Value)>, req: PageRequest) -> Value {
    let total = items.len();
    let (start, end) = if let Some(before) = req.before {
        let end = items.partition_point(|(seq, _)| *seq < before);
        (end.saturating_sub(req.first), end)
    } else {
        let start = match req.after {
            Some(after) => items.partition_point(|(seq, _)| *seq <= after),
            None => 0,
        };
        (start, (start + req.first).min(total))
    };
    let next = (end < total).then(|| match end.checked_sub(1).and_then(|i| items.get(i)) {
        Some((seq, _)) if end > start => encode_cursor(*seq),
        // An empty page: the following page starts at `end`.
        _ => encode_cursor(items[end].0.saturating_sub(1)),
    });
    let prev = (start > 0).then(|| match items.get(start) {
        Some((seq, _)) if end > start => encode_cursor(*seq),
        _ => encode_cursor(items[start - 1].0 + 1),
    });
    let page_items: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(|(_, v)| v)
        .collect();
    let mut out = json!({ "totalCount": total, "items": page_items });
    if let Some(next) = next {
        out["next"] = Value::String(next);
    }
    if let Some(prev) = prev {
        out["prev"] = Value::String(prev);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: u64) -> Vec<(u64, Value)> {
        (1..=n).map(|i| (i * 10, json!(i))).collect()
    }

    fn req(first: usize, after: Option<&Value>, before: Option<&Value>) -> PageRequest {
        let dec = |v: Option<&Value>| v.and_then(Value::as_str).and_then(decode_cursor);
        PageRequest {
            first,
            after: dec(after),
            before: dec(before),
        }
    }

    #[test]
    fn walks_forward_and_back() {
        let p1 = page(items(5), req(2, None, None));
        assert_eq!(p1["items"], json!([1, 2]));
        assert_eq!(p1["totalCount"], 5);
        assert!(p1.get("prev").is_none());
        let p2 = page(items(5), req(2, p1.get("next"), None));
        assert_eq!(p2["items"], json!([3, 4]));
        let p3 = page(items(5), req(2, p2.get("next"), None));
        assert_eq!(p3["items"], json!([5]));
        assert!(p3.get("next").is_none());
        let back = page(items(5), req(2, None, p3.get("prev")));
        assert_eq!(back["items"], json!([3, 4]));
        let back = page(items(5), req(2, None, back.get("prev")));
        assert_eq!(back["items"], json!([1, 2]));
        assert!(back.get("prev").is_none());
    }

    #[test]
    fn unpaged_lists_answer_everything_and_refuse_paging() {
        let all: Vec<Value> = (0..100).map(|i| json!(i)).collect();
        let out = whole(all);
        assert_eq!(out["totalCount"], 100);
        assert_eq!(out["items"].as_array().map(Vec::len), Some(100));
        assert!(out.get("next").is_none() && out.get("prev").is_none());
        assert!(no_paging(&Query::parse(Some("env_id=x"))).is_ok());
        for q in ["env_id=x&first=5", "after=a", "before="] {
            assert!(no_paging(&Query::parse(Some(q))).is_err(), "{q}");
        }
    }

    #[test]
    fn query_checks() {
        let q = |s: &str| PageRequest::from_query(&Query::parse(Some(s)));
        assert_eq!(q("").map(|r| r.first).ok(), Some(DEFAULT_FIRST));
        assert!(q("first=0").is_err());
        assert!(q("first=-1").is_err());
        assert!(q("first=abc").is_err());
        assert!(q("first=101").is_err());
        assert!(q("first=100").is_ok());
        assert!(q("after=zz").is_err());
        assert!(q(&format!("after={}", encode_cursor(3))).is_ok());
    }
}
