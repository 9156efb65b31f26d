//! Renderers of query results.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UnionArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;

use crate::LakeError;
use crate::files::io_err;
use crate::writer::write_parquet;

/// Renders one value of `array` as text, as the terminal table would.
fn format_values(array: &dyn Array) -> Result<StringArray, LakeError> {
    if let Some(union) = array.as_any().downcast_ref::<UnionArray>() {
        return union_values(union);
    }
    let options = FormatOptions::default();
    let formatter = ArrayFormatter::try_new(array, &options)?;
    Ok((0..array.len())
        .map(|i| (!array.is_null(i)).then(|| formatter.value(i).to_string()))
        .collect())
}

/// The JSON functions return a union (one variant per JSON type); readers want
/// the value itself, not Arrow's `{type=value}` notation.
fn union_values(union: &UnionArray) -> Result<StringArray, LakeError> {
    let options = FormatOptions::default();
    let mut out = Vec::with_capacity(union.len());
    for i in 0..union.len() {
        let child = union.child(union.type_id(i));
        let offset = union.value_offset(i);
        if child.is_null(offset) || child.data_type() == &DataType::Null {
            out.push(None);
        } else {
            let formatter = ArrayFormatter::try_new(child.as_ref(), &options)?;
            out.push(Some(formatter.value(offset).to_string()));
        }
    }
    Ok(StringArray::from(out))
}

/// Replaces columns for which `stringify` holds by their text rendering.
fn stringify_columns(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    stringify: impl Fn(&DataType) -> bool,
) -> Result<(SchemaRef, Vec<RecordBatch>), LakeError> {
    if !schema.fields().iter().any(|f| stringify(f.data_type())) {
        return Ok((Arc::clone(schema), batches.to_vec()));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if stringify(f.data_type()) {
                Field::new(f.name(), DataType::Utf8, true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let new_schema = Arc::new(Schema::new(fields));
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .map(|c| {
                if stringify(c.data_type()) {
                    Ok(Arc::new(format_values(c.as_ref())?) as ArrayRef)
                } else {
                    Ok(Arc::clone(c))
                }
            })
            .collect::<Result<Vec<_>, LakeError>>()?;
        out.push(RecordBatch::try_new(Arc::clone(&new_schema), columns)?);
    }
    Ok((new_schema, out))
}

fn is_union(t: &DataType) -> bool {
    matches!(t, DataType::Union(_, _))
}

/// CSV has no nested values, so anything that is not a scalar becomes text.
fn not_csv_scalar(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Union(_, _)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(_, _)
            | DataType::Struct(_)
            | DataType::Map(_, _)
            | DataType::RunEndEncoded(_, _)
    )
}

/// The rows as a JSON array of objects (`[]` when there are none).
pub(crate) fn json_array(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, LakeError> {
    use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
    let (_, batches) = stringify_columns(schema, batches, is_union)?;
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(Vec::new());
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    Ok(if bytes.is_empty() {
        b"[]".to_vec()
    } else {
        bytes
    })
}

pub(crate) fn json_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, LakeError> {
    serde_json::from_slice(&json_array(schema, batches)?)
        .map_err(|e| LakeError::Internal(format!("JSON rendering produced invalid JSON: {e}")))
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => is_text(value),
        _ => false,
    }
}

/// The first characters that make a spreadsheet read a cell as a formula (`=HYPERLINK(…)`
/// in a marketer's export would run when opened).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Text cells that a spreadsheet would take for a formula, prefixed with `'`, which
/// spreadsheets read as "this cell is text" (OWASP's advice for CSV injection).
fn defuse_formulas(batch: &RecordBatch) -> Result<RecordBatch, LakeError> {
    let columns = batch
        .columns()
        .iter()
        .map(
            |column| match column.as_any().downcast_ref::<StringArray>() {
                Some(text) if text.iter().flatten().any(|v| v.starts_with(FORMULA_STARTS)) => {
                    let defused: StringArray = text
                        .iter()
                        .map(|v| {
                            v.map(|v| {
                                if v.starts_with(FORMULA_STARTS) {
                                    format!("'{v}")
                                } else {
                                    v.to_string()
                                }
                            })
                        })
                        .collect();
                    Arc::new(defused) as ArrayRef
                }
                _ => Arc::clone(column),
            },
        )
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// CSV for people: nested values as text, and text that a spreadsheet would run as a formula
/// defused (see [`defuse_formulas`]).
pub(crate) fn csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, LakeError> {
    use datafusion::arrow::csv::WriterBuilder;
    let (schema, batches) =
        stringify_columns(schema, batches, |t| not_csv_scalar(t) || is_text(t))?;
    let batches = batches
        .iter()
        .map(defuse_formulas)
        .collect::<Result<Vec<_>, _>>()?;
    let mut writer = WriterBuilder::new().with_header(true).build(Vec::new());
    // An empty batch still writes the header line.
    writer.write(&RecordBatch::new_empty(Arc::clone(&schema)))?;
    for batch in &batches {
        writer.write(batch)?;
    }
    String::from_utf8(writer.into_inner())
        .map_err(|e| LakeError::Internal(format!("CSV rendering produced invalid UTF-8: {e}")))
}

pub(crate) fn table_text(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, LakeError> {
    let (schema, batches) = stringify_columns(schema, batches, is_union)?;
    Ok(pretty_format_batches_with_schema(schema, &batches)?.to_string())
}

pub(crate) fn parquet(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    path: &Path,
) -> Result<usize, LakeError> {
    let (schema, batches) = stringify_columns(schema, batches, is_union)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    // A leftover of a crashed export by a process with the same id.
    if let Err(e) = std::fs::remove_file(&tmp)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(io_err(&tmp, e));
    }
    let rows = write_parquet(&tmp, &schema, batches.into_iter().map(Ok))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn csv_defuses_text_a_spreadsheet_would_run_and_leaves_numbers_alone() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("email", DataType::Utf8, true),
            Field::new("balance", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("=HYPERLINK(\"http://x\",\"y\")"),
                    Some("+1 555"),
                    Some("a@b.c"),
                    Some("@SUM(A1)"),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![-5, 1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let text = csv(&schema, &[batch]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "email,balance");
        assert_eq!(lines[1], "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",-5");
        assert_eq!(lines[2], "'+1 555,1");
        assert_eq!(lines[3], "a@b.c,2");
        assert_eq!(lines[4], "'@SUM(A1),3");
        assert_eq!(lines[5], ",4");
    }
}
