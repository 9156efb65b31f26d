//! The demo shop's product catalogue: about sixty products across eight categories, priced in CNY.
//!
//! Names mix Chinese and English the way a Chinese marketplace lists them (local brands in
//! Chinese, imports often under their English name), so that search, segmentation and
//! normalisation features see both scripts.

/// One catalogue entry. Prices are in fen (1/100 CNY) so order arithmetic stays exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    pub id: &'static str,
    pub sku: &'static str,
    pub name: &'static str,
    pub brand: &'static str,
    pub category: Category,
    pub price_fen: i64,
}

impl Product {
    /// The price in yuan, as Segment's ecommerce spec expects (a decimal number).
    pub fn price(&self) -> f64 {
        fen_to_yuan(self.price_fen)
    }
}

/// Converts fen to yuan for JSON output.
pub fn fen_to_yuan(fen: i64) -> f64 {
    // Dividing the exact integer keeps values such as 129.9 from printing as 129.89999.
    fen as f64 / 100.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Phones,
    Computers,
    Apparel,
    Beauty,
    Food,
    Home,
    Books,
    Sports,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::Phones,
        Category::Computers,
        Category::Apparel,
        Category::Beauty,
        Category::Food,
        Category::Home,
        Category::Books,
        Category::Sports,
    ];

    /// The category label the shop shows, which is what lands in `properties.category`.
    pub fn label(self) -> &'static str {
        match self {
            Category::Phones => "手机",
            Category::Computers => "电脑",
            Category::Apparel => "服饰",
            Category::Beauty => "美妆",
            Category::Food => "食品",
            Category::Home => "家居",
            Category::Books => "图书",
            Category::Sports => "运动",
        }
    }

    pub fn english(self) -> &'static str {
        match self {
            Category::Phones => "Phones",
            Category::Computers => "Computers",
            Category::Apparel => "Apparel",
            Category::Beauty => "Beauty",
            Category::Food => "Food",
            Category::Home => "Home",
            Category::Books => "Books",
            Category::Sports => "Sports",
        }
    }

    /// URL slug used in page paths.
    pub fn slug(self) -> &'static str {
        match self {
            Category::Phones => "phones",
            Category::Computers => "computers",
            Category::Apparel => "apparel",
            Category::Beauty => "beauty",
            Category::Food => "food",
            Category::Home => "home",
            Category::Books => "books",
            Category::Sports => "sports",
        }
    }

    /// What people type into the search box before landing in this category.
    pub(crate) fn search_terms(self) -> &'static [&'static str] {
        match self {
            Category::Phones => &[
                "手机",
                "iphone 15",
                "华为mate60",
                "5G手机",
                "小米14",
                "airpods",
            ],
            Category::Computers => &["笔记本电脑", "macbook air", "机械键盘", "ipad", "无线鼠标"],
            Category::Apparel => &["羽绒服", "连衣裙", "牛仔裤", "hoodie", "外套 男"],
            Category::Beauty => &["口红", "精华", "面霜", "sk2", "眼影"],
            Category::Food => &["零食大礼包", "坚果", "咖啡豆", "螺蛳粉", "矿泉水"],
            Category::Home => &["吸尘器", "空气净化器", "电饭煲", "扫地机器人", "蚕丝被"],
            Category::Books => &["三体", "atomic habits", "kindle", "小说", "编程"],
            Category::Sports => &["跑鞋", "瑜伽垫", "running shoes", "运动手表", "羽毛球拍"],
        }
    }
}

macro_rules! product {
    ($id:literal, $sku:literal, $name:literal, $brand:literal, $cat:ident, $yuan:literal) => {
        Product {
            id: $id,
            sku: $sku,
            name: $name,
            brand: $brand,
            category: Category::$cat,
            price_fen: $yuan * 100,
        }
    };
}

#[rustfmt::skip]
static PRODUCTS: [Product; 63] = [
    product!("P1001", "PHN-HW-M60P-512", "华为 Mate 60 Pro 12GB+512GB", "HUAWEI", Phones, 6999),
    product!("P1002", "PHN-AP-IP15-128", "Apple iPhone 15 128GB", "Apple", Phones, 5999),
    product!("P1003", "PHN-AP-IP15PM-256", "Apple iPhone 15 Pro Max 256GB", "Apple", Phones, 8999),
    product!("P1004", "PHN-MI-14-512", "小米 14 16GB+512GB", "Xiaomi", Phones, 4599),
    product!("P1005", "PHN-RM-N13P-256", "Redmi Note 13 Pro 5G", "Xiaomi", Phones, 1399),
    product!("P1006", "PHN-OP-RN11-256", "OPPO Reno11 5G", "OPPO", Phones, 2499),
    product!("P1007", "PHN-VV-X100P-256", "vivo X100 Pro", "vivo", Phones, 4999),
    product!("P1008", "PHN-HN-MG6-256", "荣耀 Magic6 5G", "HONOR", Phones, 4399),
    product!("P1009", "PHN-AP-APP2", "Apple AirPods Pro 2", "Apple", Phones, 1899),
    product!("P2001", "CMP-AP-MBA13-M3", "Apple MacBook Air 13 M3", "Apple", Computers, 8999),
    product!("P2002", "CMP-LN-XXP14", "联想 小新 Pro 14 锐龙版", "Lenovo", Computers, 5499),
    product!("P2003", "CMP-HW-MB14", "华为 MateBook 14", "HUAWEI", Computers, 5999),
    product!("P2004", "CMP-LG-MXM3S", "罗技 MX Master 3S 无线鼠标", "Logitech", Computers, 699),
    product!("P2005", "CMP-AP-IPA11", "Apple iPad Air 11", "Apple", Computers, 4799),
    product!("P2006", "CMP-RM-RB16", "Redmi Book 16", "Xiaomi", Computers, 3999),
    product!("P2007", "CMP-KC-K8", "Keychron K8 机械键盘", "Keychron", Computers, 499),
    product!("P3001", "APL-UQ-FLC-M", "优衣库 男装 摇粒绒外套", "UNIQLO", Apparel, 199),
    product!("P3002", "APL-UQ-HT-W", "优衣库 女装 HEATTECH 打底衫", "UNIQLO", Apparel, 79),
    product!("P3003", "APL-LV-501", "Levi's 501 Original Jeans", "Levi's", Apparel, 599),
    product!("P3004", "APL-BSD-DJ-W", "波司登 女士轻薄羽绒服", "Bosideng", Apparel, 1299),
    product!("P3005", "APL-PB-DRS", "太平鸟 法式碎花连衣裙", "PEACEBIRD", Apparel, 459),
    product!("P3006", "APL-NK-CLUB", "Nike Sportswear Club Hoodie", "Nike", Apparel, 399),
    product!("P3007", "APL-AT-SWT-M", "安踏 男款 休闲卫衣", "ANTA", Apparel, 259),
    product!("P3008", "APL-ZR-BLZ", "Zara Oversized Blazer", "Zara", Apparel, 599),
    product!("P4001", "BTY-EL-ANR-50", "雅诗兰黛 小棕瓶精华 50ml", "Estée Lauder", Beauty, 950),
    product!("P4002", "BTY-LC-ABS-196", "兰蔻 菁纯口红 196", "Lancôme", Beauty, 350),
    product!("P4003", "BTY-PD-EYE", "完美日记 十六色眼影盘", "Perfect Diary", Beauty, 129),
    product!("P4004", "BTY-FX-PWD", "花西子 空气蜜粉", "Florasis", Beauty, 189),
    product!("P4005", "BTY-SK2-FTE-230", "SK-II 神仙水 230ml", "SK-II", Beauty, 1540),
    product!("P4006", "BTY-PY-DK", "珀莱雅 双抗精华 30ml", "PROYA", Beauty, 299),
    product!("P4007", "BTY-TO-NIA", "The Ordinary Niacinamide 10% + Zinc 1%", "The Ordinary", Beauty, 89),
    product!("P4008", "BTY-WN-CRM", "薇诺娜 舒敏保湿特护霜", "Winona", Beauty, 268),
    product!("P5001", "FD-SS-NUT30", "三只松鼠 每日坚果 30包", "Three Squirrels", Food, 129),
    product!("P5002", "FD-LP-GIFT", "良品铺子 零食大礼包", "BESTORE", Food, 99),
    product!("P5003", "FD-NF-550X24", "农夫山泉 天然水 550ml×24", "Nongfu Spring", Food, 36),
    product!("P5004", "FD-YQ-480X15", "元气森林 气泡水 480ml×15", "Genki Forest", Food, 69),
    product!("P5005", "FD-WC-RICE5", "五常大米 稻花香 5kg", "柴火大院", Food, 89),
    product!("P5006", "FD-DV-GIFT", "德芙 丝滑牛奶巧克力礼盒", "Dove", Food, 59),
    product!("P5007", "FD-SB-PP250", "Starbucks Pike Place 咖啡豆 250g", "Starbucks", Food, 98),
    product!("P5008", "FD-WL-LT", "卫龙 辣条 大礼包", "Weilong", Food, 29),
    product!("P6001", "HM-DY-V12", "戴森 V12 Detect Slim 无线吸尘器", "Dyson", Home, 4490),
    product!("P6002", "HM-MI-AP4P", "小米 空气净化器 4 Pro", "Xiaomi", Home, 1299),
    product!("P6003", "HM-MD-RC4L", "美的 智能电饭煲 4L", "Midea", Home, 399),
    product!("P6004", "HM-JY-SOY", "九阳 破壁豆浆机", "Joyoung", Home, 459),
    product!("P6005", "HM-IK-KLX", "IKEA KALLAX 置物架", "IKEA", Home, 399),
    product!("P6006", "HM-MC-SILK", "水星家纺 桑蚕丝被", "Mercury", Home, 899),
    product!("P6007", "HM-RR-G20", "石头 扫地机器人 G20", "Roborock", Home, 3999),
    product!("P6008", "HM-LL-BOX", "乐扣乐扣 玻璃保鲜盒套装", "LocknLock", Home, 129),
    product!("P7001", "BK-STB-SET", "《三体》全集", "重庆出版社", Books, 93),
    product!("P7002", "BK-HZ-YH", "《活着》余华", "作家出版社", Books, 39),
    product!("P7003", "BK-AH-EN", "Atomic Habits", "Penguin", Books, 89),
    product!("P7004", "BK-PRIN-CN", "《原则》瑞·达利欧", "中信出版社", Books, 98),
    product!("P7005", "BK-PRAG-EN", "The Pragmatic Programmer", "Addison-Wesley", Books, 129),
    product!("P7006", "BK-SAP-CN", "《人类简史》", "中信出版社", Books, 68),
    product!("P7007", "BK-KPW5", "Kindle Paperwhite 5", "Amazon", Books, 1068),
    product!("P8001", "SPT-NK-PEG40", "Nike Air Zoom Pegasus 40", "Nike", Sports, 899),
    product!("P8002", "SPT-LN-CQ21", "李宁 超轻21 跑鞋", "LI-NING", Sports, 569),
    product!("P8003", "SPT-LL-ALIGN", "Lululemon Align 高腰瑜伽裤", "lululemon", Sports, 850),
    product!("P8004", "SPT-DC-MAT8", "迪卡侬 瑜伽垫 8mm", "Decathlon", Sports, 99),
    product!("P8005", "SPT-AT-KT9", "安踏 KT9 篮球鞋", "ANTA", Sports, 1199),
    product!("P8006", "SPT-GM-FR265", "Garmin Forerunner 265 运动手表", "Garmin", Sports, 2980),
    product!("P8007", "SPT-KP-ROPE", "Keep 智能跳绳", "Keep", Sports, 129),
    product!("P8008", "SPT-YX-88D", "YONEX 天斧88D 羽毛球拍", "YONEX", Sports, 1280),
];

/// The whole catalogue, in a stable order.
pub fn products() -> &'static [Product] {
    &PRODUCTS
}

/// Products in one category, in catalogue order.
pub fn in_category(category: Category) -> impl Iterator<Item = &'static Product> {
    PRODUCTS.iter().filter(move |p| p.category == category)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn catalogue_is_consistent() {
        let ids: HashSet<_> = products().iter().map(|p| p.id).collect();
        let skus: HashSet<_> = products().iter().map(|p| p.sku).collect();
        assert_eq!(ids.len(), products().len());
        assert_eq!(skus.len(), products().len());
        for c in Category::ALL {
            assert!(in_category(c).count() >= 6, "{c:?} too small");
        }
        for p in products() {
            assert!((2_900..=899_900).contains(&p.price_fen), "{} price", p.name);
        }
    }
}
