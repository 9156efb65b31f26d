//! A read-only view of the lake directory as an object store that lists only
//! the visible part files, so DataFusion's listing table (with its partition
//! pruning and statistics) applies the lake's visibility rule for free.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path as FsPath;

use async_trait::async_trait;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use futures::{FutureExt, TryFutureExt};

use crate::files::{parse_part_file_name, split_visible};

#[derive(Debug)]
pub(crate) struct LakeStore {
    inner: LocalFileSystem,
}

impl LakeStore {
    pub(crate) fn new(events_dir: &FsPath) -> Result<Self> {
        Ok(Self {
            inner: LocalFileSystem::new_with_prefix(events_dir)?,
        })
    }
}

impl fmt::Display for LakeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeStore({})", self.inner)
    }
}

/// Directory listings taken at most, one after the other, until two agree.
const MAX_LISTINGS: usize = 4;

/// The first listing that the next one repeats (or the last one taken).
///
/// A directory read is no snapshot: while it runs, a compaction may rename its merged file into a
/// place the read has passed and delete the files it replaces from places the read has not reached
/// yet. That listing holds neither, and a query planned on it loses rows. Files only appear and
/// disappear in such swaps, so a listing that the next one repeats was taken while no swap ran.
/// The listings are awaited one after the other, each started once the one before has finished.
async fn settled_listing<I, F>(listings: I) -> Result<ListResult>
where
    I: IntoIterator<Item = F>,
    F: std::future::Future<Output = Result<ListResult>>,
{
    let names = |listing: &ListResult| {
        let mut names: Vec<&Path> = listing
            .objects
            .iter()
            .map(|o| &o.location)
            .chain(&listing.common_prefixes)
            .collect();
        names.sort();
        names.into_iter().cloned().collect::<Vec<Path>>()
    };
    let mut previous: Option<ListResult> = None;
    for listing in listings {
        let current = listing.await?;
        if let Some(previous) = previous
            && names(&previous) == names(&current)
        {
            return Ok(previous);
        }
        previous = Some(current);
    }
    Ok(previous.unwrap_or(ListResult {
        objects: Vec::new(),
        common_prefixes: Vec::new(),
    }))
}

/// Keeps the part files that are not covered by another file of the same
/// directory; drops everything else (temporary files, journal, strangers).
fn visible_objects(objects: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    let mut by_dir: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for meta in objects {
        let Some(range) = meta.location.filename().and_then(parse_part_file_name) else {
            continue;
        };
        let name_len = meta.location.filename().map_or(0, str::len);
        let full = meta.location.as_ref();
        let dir = full[..full.len() - name_len].to_owned();
        by_dir.entry(dir).or_default().push((range, meta));
    }
    by_dir
        .into_values()
        .flat_map(|items| split_visible(&items).0.into_iter().map(|(_, meta)| meta))
        .collect()
}

fn read_only(operation: &str) -> datafusion::object_store::Error {
    datafusion::object_store::Error::NotSupported {
        source: format!("the lake is read-only for queries ({operation})").into(),
    }
}

#[async_trait]
impl ObjectStore for LakeStore {
    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> Result<PutResult> {
        Err(read_only("put"))
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(read_only("put"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        locations.map(|_| Err(read_only("delete"))).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // The rule needs all files of a directory at once, so the listing is
        // collected before it is filtered; a day holds few files.
        let listings: Vec<BoxFuture<'static, Result<ListResult>>> = (0..MAX_LISTINGS)
            .map(|_| {
                self.inner
                    .list(prefix)
                    .try_collect::<Vec<ObjectMeta>>()
                    .map_ok(|objects| ListResult {
                        objects,
                        common_prefixes: Vec::new(),
                    })
                    .boxed()
            })
            .collect();
        stream::once(async move {
            let listing = settled_listing(listings).await?;
            Ok::<_, datafusion::object_store::Error>(stream::iter(
                visible_objects(listing.objects).into_iter().map(Ok),
            ))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let listings = (0..MAX_LISTINGS).map(|_| self.inner.list_with_delimiter(prefix));
        let mut result = settled_listing(listings).await?;
        result.objects = visible_objects(result.objects);
        Ok(result)
    }

    async fn copy_opts(&self, _from: &Path, _to: &Path, _options: CopyOptions) -> Result<()> {
        Err(read_only("copy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(path),
            last_modified: chrono::DateTime::default(),
            size: 1,
            e_tag: None,
            version: None,
        }
    }

    /// Listings as a directory read racing a compaction gives them: the second misses both the
    /// merged file and the files it replaced.
    #[tokio::test]
    async fn a_listing_counts_once_the_next_one_repeats_it() -> Result<()> {
        let before = ["d/part-1-10.parquet", "d/part-11-20.parquet"];
        let torn = ["d/part-11-20.parquet"];
        let after = ["d/part-1-20.parquet", "d/part-11-20.parquet"];
        let listing = |names: &[&str]| {
            let objects: Vec<ObjectMeta> = names.iter().map(|n| meta(n)).collect();
            async move {
                Ok(ListResult {
                    objects,
                    common_prefixes: Vec::new(),
                })
            }
        };
        let names = |listing: ListResult| -> Vec<String> {
            listing
                .objects
                .iter()
                .map(|o| o.location.to_string())
                .collect()
        };
        // Stable from the start: the first listing serves.
        let got = settled_listing([listing(&before), listing(&before), listing(&torn)]).await?;
        assert_eq!(names(got), before);
        // A torn listing is never used when a later pair agrees.
        let got = settled_listing([
            listing(&before),
            listing(&torn),
            listing(&after),
            listing(&after),
        ])
        .await?;
        assert_eq!(names(got), after);
        // Order within a listing does not matter.
        let got = settled_listing([listing(&after), listing(&[after[1], after[0]])]).await?;
        assert_eq!(names(got), after);
        Ok(())
    }

    #[test]
    fn hides_covered_and_foreign_files_per_directory() {
        let objects = vec![
            meta("date=2024-01-01/part-1-10.parquet"),
            meta("date=2024-01-01/part-11-20.parquet"),
            meta("date=2024-01-01/part-1-20.parquet"),
            meta("date=2024-01-01/.part-21-30.parquet.tmp-1-0"),
            meta("date=2024-01-02/part-5-8.parquet"),
            meta("_commit.json"),
        ];
        let mut names: Vec<String> = visible_objects(objects)
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "date=2024-01-01/part-1-20.parquet",
                "date=2024-01-02/part-5-8.parquet"
            ]
        );
    }
}
