//! Static reference data for synthetic customers: names, cities, devices, channels.
//!
//! Weights are rough real-world proportions, not statistics; they exist so that the demo's
//! charts look like a shop's rather than like a uniform distribution.

/// (hanzi, pinyin, weight). Weights follow the common-surname ranking loosely.
pub(crate) const CN_SURNAMES: &[(&str, &str, u32)] = &[
    ("王", "wang", 30),
    ("李", "li", 30),
    ("张", "zhang", 28),
    ("刘", "liu", 22),
    ("陈", "chen", 20),
    ("杨", "yang", 14),
    ("黄", "huang", 10),
    ("赵", "zhao", 10),
    ("吴", "wu", 9),
    ("周", "zhou", 9),
    ("徐", "xu", 7),
    ("孙", "sun", 7),
    ("马", "ma", 6),
    ("朱", "zhu", 6),
    ("胡", "hu", 6),
    ("郭", "guo", 5),
    ("何", "he", 5),
    ("林", "lin", 5),
    ("高", "gao", 5),
    ("罗", "luo", 4),
    ("郑", "zheng", 4),
    ("梁", "liang", 4),
    ("谢", "xie", 3),
    ("宋", "song", 3),
    ("唐", "tang", 3),
    ("韩", "han", 3),
    ("冯", "feng", 3),
    ("邓", "deng", 3),
    ("曹", "cao", 2),
    ("欧阳", "ouyang", 1),
];

/// (hanzi, pinyin).
pub(crate) const CN_GIVEN_FEMALE: &[(&str, &str)] = &[
    ("芳", "fang"),
    ("敏", "min"),
    ("静", "jing"),
    ("丽", "li"),
    ("娟", "juan"),
    ("艳", "yan"),
    ("秀英", "xiuying"),
    ("婷", "ting"),
    ("雪", "xue"),
    ("慧", "hui"),
    ("欣怡", "xinyi"),
    ("梓涵", "zihan"),
    ("雨萱", "yuxuan"),
    ("诗涵", "shihan"),
    ("佳琪", "jiaqi"),
    ("晓燕", "xiaoyan"),
    ("玲", "ling"),
    ("倩", "qian"),
    ("颖", "ying"),
    ("思雨", "siyu"),
];

pub(crate) const CN_GIVEN_MALE: &[(&str, &str)] = &[
    ("伟", "wei"),
    ("强", "qiang"),
    ("磊", "lei"),
    ("军", "jun"),
    ("洋", "yang"),
    ("勇", "yong"),
    ("杰", "jie"),
    ("涛", "tao"),
    ("明", "ming"),
    ("超", "chao"),
    ("浩然", "haoran"),
    ("子轩", "zixuan"),
    ("宇轩", "yuxuan"),
    ("俊杰", "junjie"),
    ("建华", "jianhua"),
    ("志强", "zhiqiang"),
    ("鹏", "peng"),
    ("斌", "bin"),
    ("晨", "chen"),
    ("博文", "bowen"),
];

pub(crate) const EN_GIVEN_FEMALE: &[&str] = &[
    "Emily", "Sarah", "Jessica", "Olivia", "Emma", "Sophia", "Hannah", "Grace", "Chloe", "Rachel",
    "Megan", "Laura", "Amy", "Lucy", "Zoe",
];

pub(crate) const EN_GIVEN_MALE: &[&str] = &[
    "James", "John", "Michael", "David", "Daniel", "Matthew", "Ryan", "Kevin", "Brian", "Thomas",
    "Andrew", "Chris", "Jason", "Eric", "Ethan",
];

pub(crate) const EN_SURNAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson",
    "Taylor", "Thomas", "Moore", "Martin", "Clark", "Lewis", "Walker", "Hall", "Young", "King",
    "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Chen", "Wong", "Lee",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    One,
    Two,
    Three,
    International,
}

#[derive(Debug)]
pub(crate) struct City {
    pub name: &'static str,
    pub name_en: &'static str,
    pub country: &'static str,
    pub tier: Tier,
    pub timezone: &'static str,
    /// Standard-time offset; daylight saving is ignored because only the hour-of-day shape
    /// of activity depends on it.
    pub utc_offset_hours: i64,
}

macro_rules! city {
    ($name:literal, $en:literal, $cc:literal, $tier:ident, $tz:literal, $off:literal) => {
        City {
            name: $name,
            name_en: $en,
            country: $cc,
            tier: Tier::$tier,
            timezone: $tz,
            utc_offset_hours: $off,
        }
    };
}

#[rustfmt::skip]
pub(crate) const CITIES: &[City] = &[
    city!("北京", "Beijing", "CN", One, "Asia/Shanghai", 8),
    city!("上海", "Shanghai", "CN", One, "Asia/Shanghai", 8),
    city!("广州", "Guangzhou", "CN", One, "Asia/Shanghai", 8),
    city!("深圳", "Shenzhen", "CN", One, "Asia/Shanghai", 8),
    city!("杭州", "Hangzhou", "CN", Two, "Asia/Shanghai", 8),
    city!("成都", "Chengdu", "CN", Two, "Asia/Shanghai", 8),
    city!("南京", "Nanjing", "CN", Two, "Asia/Shanghai", 8),
    city!("武汉", "Wuhan", "CN", Two, "Asia/Shanghai", 8),
    city!("西安", "Xi'an", "CN", Two, "Asia/Shanghai", 8),
    city!("重庆", "Chongqing", "CN", Two, "Asia/Shanghai", 8),
    city!("苏州", "Suzhou", "CN", Two, "Asia/Shanghai", 8),
    city!("天津", "Tianjin", "CN", Two, "Asia/Shanghai", 8),
    city!("长沙", "Changsha", "CN", Two, "Asia/Shanghai", 8),
    city!("郑州", "Zhengzhou", "CN", Two, "Asia/Shanghai", 8),
    city!("厦门", "Xiamen", "CN", Two, "Asia/Shanghai", 8),
    city!("青岛", "Qingdao", "CN", Two, "Asia/Shanghai", 8),
    city!("洛阳", "Luoyang", "CN", Three, "Asia/Shanghai", 8),
    city!("绵阳", "Mianyang", "CN", Three, "Asia/Shanghai", 8),
    city!("桂林", "Guilin", "CN", Three, "Asia/Shanghai", 8),
    city!("襄阳", "Xiangyang", "CN", Three, "Asia/Shanghai", 8),
    city!("芜湖", "Wuhu", "CN", Three, "Asia/Shanghai", 8),
    city!("潍坊", "Weifang", "CN", Three, "Asia/Shanghai", 8),
    city!("赣州", "Ganzhou", "CN", Three, "Asia/Shanghai", 8),
    city!("湛江", "Zhanjiang", "CN", Three, "Asia/Shanghai", 8),
    city!("新加坡", "Singapore", "SG", International, "Asia/Singapore", 8),
    city!("香港", "Hong Kong", "HK", International, "Asia/Hong_Kong", 8),
    city!("纽约", "New York", "US", International, "America/New_York", -5),
    city!("旧金山", "San Francisco", "US", International, "America/Los_Angeles", -8),
    city!("伦敦", "London", "GB", International, "Europe/London", 0),
    city!("悉尼", "Sydney", "AU", International, "Australia/Sydney", 10),
    city!("多伦多", "Toronto", "CA", International, "America/Toronto", -5),
    city!("温哥华", "Vancouver", "CA", International, "America/Vancouver", -8),
    city!("吉隆坡", "Kuala Lumpur", "MY", International, "Asia/Kuala_Lumpur", 8),
    city!("东京", "Tokyo", "JP", International, "Asia/Tokyo", 9),
];

/// US area codes used with the fictional 555-01xx block, so no generated number is real.
pub(crate) const US_AREA_CODES: &[&str] = &[
    "212", "646", "415", "628", "310", "206", "312", "617", "512", "305", "404", "702", "303",
    "503", "718", "917", "408", "650", "213", "202",
];

/// Mobile prefixes of the three Chinese carriers; the second field is the carrier name that
/// the app reports in `context.network.carrier`.
pub(crate) const CN_MOBILE_PREFIXES: &[(&str, &str)] = &[
    ("134", "中国移动"),
    ("135", "中国移动"),
    ("136", "中国移动"),
    ("137", "中国移动"),
    ("138", "中国移动"),
    ("139", "中国移动"),
    ("150", "中国移动"),
    ("151", "中国移动"),
    ("152", "中国移动"),
    ("158", "中国移动"),
    ("159", "中国移动"),
    ("182", "中国移动"),
    ("187", "中国移动"),
    ("188", "中国移动"),
    ("130", "中国联通"),
    ("131", "中国联通"),
    ("132", "中国联通"),
    ("155", "中国联通"),
    ("156", "中国联通"),
    ("185", "中国联通"),
    ("186", "中国联通"),
    ("133", "中国电信"),
    ("153", "中国电信"),
    ("177", "中国电信"),
    ("180", "中国电信"),
    ("189", "中国电信"),
    ("199", "中国电信"),
];

pub(crate) const US_CARRIERS: &[&str] = &["T-Mobile", "Verizon", "AT&T"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    Ios,
    Android,
    Web,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Ios => "ios",
            DeviceKind::Android => "android",
            DeviceKind::Web => "web",
        }
    }

    pub fn is_app(self) -> bool {
        !matches!(self, DeviceKind::Web)
    }
}

#[derive(Debug)]
pub(crate) struct DeviceModel {
    pub kind: DeviceKind,
    pub manufacturer: &'static str,
    pub model: &'static str,
    pub os_name: &'static str,
    pub os_versions: &'static [&'static str],
    pub screen: (u32, u32),
    /// Chance that one telemetry sample overheats. One model runs hot on purpose so that
    /// anomaly detection in the demo has a real cluster to find.
    pub overheat_rate: f64,
    /// For web "devices": the browser user agent; for apps, none.
    pub user_agent: Option<&'static str>,
    /// Relative popularity among Chinese and among English-speaking customers.
    pub weight_cn: u32,
    pub weight_en: u32,
}

macro_rules! app_model {
    ($kind:ident, $mf:literal, $model:literal, $os:literal, [$($v:literal),+], $w:literal x $h:literal, $hot:literal, $wcn:literal, $wen:literal) => {
        DeviceModel {
            kind: DeviceKind::$kind,
            manufacturer: $mf,
            model: $model,
            os_name: $os,
            os_versions: &[$($v),+],
            screen: ($w, $h),
            overheat_rate: $hot,
            user_agent: None,
            weight_cn: $wcn,
            weight_en: $wen,
        }
    };
}

macro_rules! web_model {
    ($mf:literal, $model:literal, $os:literal, $osv:literal, $w:literal x $h:literal, $ua:literal, $wcn:literal, $wen:literal) => {
        DeviceModel {
            kind: DeviceKind::Web,
            manufacturer: $mf,
            model: $model,
            os_name: $os,
            os_versions: &[$osv],
            screen: ($w, $h),
            overheat_rate: 0.0,
            user_agent: Some($ua),
            weight_cn: $wcn,
            weight_en: $wen,
        }
    };
}

#[rustfmt::skip]
pub(crate) const DEVICE_MODELS: &[DeviceModel] = &[
    app_model!(Ios, "Apple", "iPhone14,5", "iOS", ["16.7.8", "17.4.1", "17.5.1"], 390 x 844, 0.004, 10, 12),
    app_model!(Ios, "Apple", "iPhone15,2", "iOS", ["17.4.1", "17.5.1"], 393 x 852, 0.004, 10, 12),
    app_model!(Ios, "Apple", "iPhone16,1", "iOS", ["17.5.1", "17.6"], 393 x 852, 0.004, 8, 14),
    app_model!(Ios, "Apple", "iPhone16,2", "iOS", ["17.5.1", "17.6"], 430 x 932, 0.004, 6, 10),
    app_model!(Android, "HUAWEI", "ALN-AL00", "HarmonyOS", ["4.0.0", "4.2.0"], 412 x 915, 0.004, 16, 0),
    app_model!(Android, "Xiaomi", "23127PN0CC", "Android", ["14"], 393 x 873, 0.004, 12, 1),
    app_model!(Android, "Xiaomi", "23090RA98C", "Android", ["13", "14"], 393 x 873, 0.004, 10, 0),
    app_model!(Android, "OPPO", "PJH110", "Android", ["14"], 412 x 915, 0.08, 8, 0),
    app_model!(Android, "vivo", "V2324A", "Android", ["14"], 412 x 919, 0.004, 8, 0),
    app_model!(Android, "HONOR", "BVL-AN00", "Android", ["14"], 412 x 915, 0.004, 6, 0),
    app_model!(Android, "samsung", "SM-S9210", "Android", ["14"], 384 x 832, 0.004, 2, 8),
    app_model!(Android, "Google", "Pixel 8", "Android", ["14"], 412 x 915, 0.004, 0, 6),
    web_model!("Apple", "Macintosh", "Mac OS X", "14.4.1", 1512 x 982,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15", 6, 14),
    web_model!("Apple", "Macintosh", "Mac OS X", "14.5", 1728 x 1117,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36", 6, 10),
    web_model!("Microsoft", "Windows PC", "Windows", "10", 1920 x 1080,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36", 14, 10),
    web_model!("Microsoft", "Windows PC", "Windows", "10", 1536 x 864,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 Edg/125.0.0.0", 8, 6),
    web_model!("Unknown", "Linux PC", "Linux", "6.5", 1920 x 1080,
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", 1, 2),
];

pub(crate) const CN_SIGNUP_CHANNELS: &[(&str, u32)] = &[
    ("wechat_mini_program", 24),
    ("douyin", 18),
    ("xiaohongshu", 14),
    ("baidu_search", 10),
    ("app_store", 14),
    ("referral", 10),
    ("organic", 10),
];

pub(crate) const EN_SIGNUP_CHANNELS: &[(&str, u32)] = &[
    ("google_ads", 22),
    ("organic_search", 22),
    ("instagram", 14),
    ("referral", 12),
    ("app_store", 16),
    ("newsletter", 6),
    ("organic", 8),
];

/// Local-time activity by hour (0..24): quiet at night, lunch bump, evening peak.
pub(crate) const HOUR_WEIGHTS: [u32; 24] = [
    10, 5, 3, 2, 2, 3, 8, 15, 25, 30, 30, 35, 45, 40, 30, 30, 30, 35, 40, 50, 65, 70, 60, 30,
];
