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
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

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
        let all = self.inner.list(prefix);
        stream::once(async move {
            let objects: Vec<ObjectMeta> = all.try_collect().await?;
            Ok::<_, datafusion::object_store::Error>(stream::iter(
                visible_objects(objects).into_iter().map(Ok),
            ))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
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
