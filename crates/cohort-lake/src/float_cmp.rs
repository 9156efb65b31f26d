//! Float comparisons against a non-zero constant, without the `-0.0` pass.
//!
//! DataFusion compares with Arrow's kernels, which order floats by IEEE 754 totalOrder and so
//! tell `-0.0` from `+0.0`. To give SQL's answer (they are equal) it first scans every float
//! operand for `-0.0` (`normalize_float_zero`); on a segment such as "revenue over 5000" that
//! scan costs nearly as much as the comparison. Against a finite constant other than zero both
//! zeros compare the same way under either order, so the scan cannot change the answer, and
//! [`SkipZeroNormalisation`] swaps those filter comparisons for one that calls the kernel
//! directly.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Datum, RecordBatch, Scalar};
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

/// Rewrites `float_expr <op> constant` (either side) in filters, for a finite, non-zero float
/// constant of the expression's own type.
#[derive(Debug)]
pub(crate) struct SkipZeroNormalisation;

impl PhysicalOptimizerRule for SkipZeroNormalisation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let schema = filter.input().schema();
            let rewritten =
                Arc::clone(filter.predicate()).transform_up(|expr| rewrite(expr, &schema))?;
            if !rewritten.transformed {
                return Ok(Transformed::no(node));
            }
            let filter = FilterExecBuilder::from(filter)
                .with_predicate(rewritten.data)
                .build()?;
            Ok(Transformed::yes(Arc::new(filter) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "skip_float_zero_normalisation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn rewrite(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    let Some(binary) = expr.downcast_ref::<BinaryExpr>() else {
        return Ok(Transformed::no(expr));
    };
    let (left, right, op) = (binary.left(), binary.right(), *binary.op());
    // `5 < x` is `x > 5`: the constant goes to the right.
    let (operand, constant, op) = match (constant_of(right), constant_of(left), op.swap()) {
        (Some(c), _, _) => (left, c, op),
        (None, Some(c), Some(swapped)) => (right, c, swapped),
        _ => return Ok(Transformed::no(expr)),
    };
    let Some(kernel) = kernel(op) else {
        return Ok(Transformed::no(expr));
    };
    let operand_type = operand.data_type(schema)?;
    if !is_nonzero_finite_float(constant, &operand_type) {
        return Ok(Transformed::no(expr));
    }
    Ok(Transformed::yes(Arc::new(FloatVsConstant {
        operand: Arc::clone(operand),
        op,
        kernel,
        constant: Scalar::new(constant.to_array()?),
        value: constant.clone(),
    })))
}

fn constant_of(expr: &Arc<dyn PhysicalExpr>) -> Option<&ScalarValue> {
    expr.downcast_ref::<Literal>().map(Literal::value)
}

fn is_nonzero_finite_float(value: &ScalarValue, operand: &DataType) -> bool {
    match (value, operand) {
        (ScalarValue::Float64(Some(v)), DataType::Float64) => v.is_finite() && *v != 0.0,
        (ScalarValue::Float32(Some(v)), DataType::Float32) => v.is_finite() && *v != 0.0,
        _ => false,
    }
}

/// An Arrow comparison kernel.
type Kernel = fn(&dyn Datum, &dyn Datum) -> std::result::Result<BooleanArray, ArrowError>;

/// Arrow's kernel for a comparison operator; `None` for every other operator.
fn kernel(op: Operator) -> Option<Kernel> {
    Some(match op {
        Operator::Eq => cmp::eq,
        Operator::NotEq => cmp::neq,
        Operator::Lt => cmp::lt,
        Operator::LtEq => cmp::lt_eq,
        Operator::Gt => cmp::gt,
        Operator::GtEq => cmp::gt_eq,
        _ => return None,
    })
}

/// `operand <op> constant` for a float operand and a finite, non-zero constant.
#[derive(Debug, Clone)]
struct FloatVsConstant {
    operand: Arc<dyn PhysicalExpr>,
    op: Operator,
    /// `op`'s kernel.
    kernel: Kernel,
    /// `value` as the one-row array the kernels take.
    constant: Scalar<ArrayRef>,
    value: ScalarValue,
}

impl PartialEq for FloatVsConstant {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op
            && self.operand.as_ref() == other.operand.as_ref()
            && self.value == other.value
    }
}

impl Eq for FloatVsConstant {}

impl Hash for FloatVsConstant {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.operand.hash(state);
        self.op.hash(state);
        self.value.hash(state);
    }
}

impl fmt::Display for FloatVsConstant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.operand, self.op, self.value)
    }
}

impl PhysicalExpr for FloatVsConstant {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.operand.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        match self.operand.evaluate(batch)? {
            ColumnarValue::Array(values) => Ok(ColumnarValue::Array(Arc::new((self.kernel)(
                &values,
                &self.constant,
            )?))),
            ColumnarValue::Scalar(value) => {
                let value = Scalar::new(value.to_array()?);
                let answer = (self.kernel)(&value, &self.constant)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &answer, 0,
                )?))
            }
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.operand]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [operand] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("a float comparison takes one child".into()))?;
        Ok(Arc::new(Self {
            operand,
            op: self.op,
            kernel: self.kernel,
            constant: self.constant.clone(),
            value: self.value.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.operand.fmt_sql(f)?;
        write!(f, " {} {}", self.op, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array};
    use datafusion::arrow::datatypes::Field;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn context(with_rule: bool) -> Result<SessionContext> {
        let mut builder = SessionStateBuilder::new().with_default_features();
        if with_rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(SkipZeroNormalisation));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let values = [
            Some(-0.0),
            Some(0.0),
            Some(5000.0),
            Some(5000.5),
            Some(-1.5),
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            None,
            Some(1e-300),
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..values.len() as i64)),
                Arc::new(Float64Array::from(values.to_vec())),
            ],
        )?;
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))?;
        Ok(ctx)
    }

    async fn ids(ctx: &SessionContext, predicate: &str) -> Result<Vec<i64>> {
        let batches = ctx
            .sql(&format!("SELECT id FROM t WHERE {predicate} ORDER BY id"))
            .await?
            .collect()
            .await?;
        let mut out = Vec::new();
        for batch in &batches {
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| DataFusionError::Internal("id is not Int64".into()))?;
            out.extend(column.values().iter().copied());
        }
        Ok(out)
    }

    async fn rewritten(ctx: &SessionContext, predicate: &str) -> Result<bool> {
        let plan = ctx
            .sql(&format!("SELECT id FROM t WHERE {predicate}"))
            .await?
            .create_physical_plan()
            .await?;
        let mut found = false;
        plan.apply(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                filter.predicate().apply(|e| {
                    found |= e.is::<FloatVsConstant>();
                    Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                })?;
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        Ok(found)
    }

    #[tokio::test]
    async fn answers_match_the_normalising_comparison_for_every_operator_and_constant() -> TestResult
    {
        let (plain, ruled) = (context(false)?, context(true)?);
        let constants = [
            ("5000", true),
            ("-1.5", true),
            ("1e-300", true),
            ("CAST(5000 AS DOUBLE)", true),
            ("0.0", false),
            ("-0.0", false),
            ("CAST('NaN' AS DOUBLE)", false),
            ("CAST('inf' AS DOUBLE)", false),
        ];
        for op in ["=", "<>", "<", "<=", ">", ">="] {
            for (constant, expect_rewrite) in constants {
                for predicate in [format!("x {op} {constant}"), format!("{constant} {op} x")] {
                    assert_eq!(
                        ids(&ruled, &predicate).await?,
                        ids(&plain, &predicate).await?,
                        "{predicate}"
                    );
                    assert_eq!(
                        rewritten(&ruled, &predicate).await?,
                        expect_rewrite,
                        "{predicate}"
                    );
                }
            }
        }
        // Inside larger predicates, and next to comparisons it leaves alone.
        for predicate in [
            "x > 5000 AND id > 1",
            "NOT (x >= -1.5) OR x = 0.0",
            "x + 1 > 5001",
            "x > 5000 AND x < 6000",
        ] {
            assert_eq!(
                ids(&ruled, predicate).await?,
                ids(&plain, predicate).await?,
                "{predicate}"
            );
            assert!(rewritten(&ruled, predicate).await?, "{predicate}");
        }
        Ok(())
    }
}
