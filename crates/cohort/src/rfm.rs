//! `cohort rfm`: RFM scores, named segments and k-means clusters, written onto profiles, with
//! the report printed as tables (or JSON).

use crate::cli::RfmArgs;
use cohort_engine::{RfmParams, RfmRun};

pub async fn run(args: RfmArgs) -> anyhow::Result<()> {
    // Reads and writes state.db directly; a running server keeps processing events meanwhile.
    let engine = crate::data_dir::open_tool(&args.data.data).await?;
    let params = RfmParams {
        window_days: args.window_days,
        k: args.k,
        as_of: args.as_of,
        ..RfmParams::default()
    };
    let run = engine.run_rfm(params).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        print!("{}", render(&run));
    }
    Ok(())
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn number(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

/// The report as plain-text tables.
pub fn render(run: &RfmRun) -> String {
    let r = &run.report;
    let as_of = run
        .params
        .as_of
        .map_or_else(|| "today".to_string(), |d| d.to_string());
    let mut out = format!(
        "RFM over the {} days to {as_of}: {} customers with orders, revenue {:.2}; {} of {} clusters (run {})\n\n",
        run.params.window_days, r.customers, r.revenue, r.k, r.k_requested, run.id
    );
    out.push_str(&format!(
        "{:<18} {:>9} {:>7} {:>14} {:>7} {:>5} {:>5} {:>5} {:>8} {:>7} {:>12}\n",
        "segment",
        "customers",
        "share",
        "revenue",
        "rev %",
        "R",
        "F",
        "M",
        "days",
        "orders",
        "revenue/cust"
    ));
    for s in &r.segments {
        let g = &s.stats;
        out.push_str(&format!(
            "{:<18} {:>9} {:>7} {:>14.2} {:>7} {:>5} {:>5} {:>5} {:>8} {:>7} {:>12}\n",
            s.segment.name(),
            g.customers,
            percent(g.customer_share),
            g.revenue,
            percent(g.revenue_share),
            number(g.mean_recency_score),
            number(g.mean_frequency_score),
            number(g.mean_monetary_score),
            number(g.mean_recency_days),
            number(g.mean_orders),
            g.mean_revenue
                .map_or_else(|| "-".to_string(), |v| format!("{v:.2}")),
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "{:<8} {:>9} {:>7} {:>14} {:>7} {:>10} {:>9} {:>12}  {}\n",
        "cluster", "customers", "share", "revenue", "rev %", "days", "orders", "revenue", "mostly"
    ));
    for c in &r.clusters {
        let g = &c.stats;
        out.push_str(&format!(
            "{:<8} {:>9} {:>7} {:>14.2} {:>7} {:>10.1} {:>9.1} {:>12.2}  {}\n",
            c.cluster,
            g.customers,
            percent(g.customer_share),
            g.revenue,
            percent(g.revenue_share),
            c.centroid.recency_days,
            c.centroid.orders,
            c.centroid.revenue,
            c.main_segment.map_or("-", |s| s.name()),
        ));
    }
    if !r.clusters.is_empty() {
        out.push_str("(cluster columns days/orders/revenue are the centroid, in original units)\n");
    }
    if let Some(p) = &run.profiles {
        out.push_str(&format!(
            "\nprofiles: {} scored, {} changed, {} lost their RFM traits\n",
            p.written, p.changed, p.cleared
        ));
    }
    out
}
