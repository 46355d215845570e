//! The built-in demo origin: a small static site served by `ServeDir`.

use std::{
    convert::Infallible,
    fmt::Write as _,
    fs, io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::atomic::{AtomicU32, Ordering},
    task::{Context, Poll},
};

use http::{header, HeaderValue, Request, Response, StatusCode};
use tower_http::services::{fs::ServeFileSystemResponseBody, ServeDir};
use tower_service::Service;

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The site's files, compiled in so that an installed binary needs no data directory.
const FILES: [(&str, &[u8]); 3] = [
    ("index.html", include_bytes!("../../demo/index.html")),
    ("style.css", include_bytes!("../../demo/style.css")),
    ("app.js", include_bytes!("../../demo/app.js")),
];

/// Size of the generated `big.txt`, large enough to show body streaming.
const BIG_TXT_BYTES: usize = 64 * 1024;

/// Pages change more often than the assets they link to.
const HTML_CACHE_CONTROL: &str = "public, max-age=60";
const ASSET_CACHE_CONTROL: &str = "public, max-age=86400";

/// The demo site written out to a fresh temporary directory, removed on drop.
///
/// `ServeDir` serves from disk, which is what gives the site real
/// `Last-Modified` and `ETag` validators.
#[derive(Debug)]
pub(crate) struct DemoSite {
    root: PathBuf,
}

impl DemoSite {
    pub(crate) fn create() -> io::Result<Self> {
        let site = Self { root: fresh_dir()? };
        for (name, contents) in FILES {
            fs::write(site.root.join(name), contents)?;
        }
        fs::write(site.root.join("big.txt"), big_txt())?;
        Ok(site)
    }

    pub(crate) fn service(&self) -> DemoService {
        DemoService {
            files: ServeDir::new(&self.root),
        }
    }
}

impl Drop for DemoSite {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temp dir is harmless.
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Makes a directory nobody else has: `create_dir` fails rather than reuse an
/// existing path, which could be a directory planted by another user.
fn fresh_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("tower-cdn-demo-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Numbered lines of text adding up to [`BIG_TXT_BYTES`].
fn big_txt() -> String {
    let mut text = String::with_capacity(BIG_TXT_BYTES);
    let mut line = 1;
    while text.len() < BIG_TXT_BYTES {
        let _ = writeln!(
            text,
            "{line:05} tower-cdn demo: the quick brown fox jumps over the lazy dog"
        );
        line += 1;
    }
    text.truncate(BIG_TXT_BYTES);
    text
}

fn is_html(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "html")
}

/// `Cache-Control` by request path: `/` and `*.html` are pages, the rest assets.
fn cache_control_for(path: &str) -> &'static str {
    if path.ends_with('/') || is_html(Path::new(path)) {
        HTML_CACHE_CONTROL
    } else {
        ASSET_CACHE_CONTROL
    }
}

/// `ServeDir` plus a `Cache-Control` policy for the demo's files.
#[derive(Clone, Debug)]
pub(crate) struct DemoService {
    files: ServeDir,
}

impl<B: Send + 'static> Service<Request<B>> for DemoService {
    type Response = Response<ServeFileSystemResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <ServeDir as Service<Request<B>>>::poll_ready(&mut self.files, cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let cache_control = cache_control_for(request.uri().path());
        let served = self.files.call(request);
        Box::pin(async move {
            let mut response = served.await?;
            // A 304 repeats the policy of the 200 it stands for (RFC 9110 §15.4.5).
            let status = response.status();
            if status.is_success() || status == StatusCode::NOT_MODIFIED {
                response.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(cache_control),
                );
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(cache_control_for("/"), HTML_CACHE_CONTROL);
        assert_eq!(cache_control_for("/index.html"), HTML_CACHE_CONTROL);
        assert_eq!(cache_control_for("/style.css"), ASSET_CACHE_CONTROL);
        assert_eq!(cache_control_for("/big.txt"), ASSET_CACHE_CONTROL);
    }

    #[test]
    fn site_is_written_and_removed() {
        let site = DemoSite::create().unwrap();
        let root = site.root.clone();
        assert_eq!(fs::read(root.join("big.txt")).unwrap().len(), BIG_TXT_BYTES);
        assert!(root.join("index.html").is_file());
        drop(site);
        assert!(!root.exists());
    }
}
