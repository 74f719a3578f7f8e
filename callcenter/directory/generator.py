"""Demo elders: realistic, reproducible, fast (100,000 in seconds) — for demos and benchmarks.

Beijing districts with their real streets (街道) and communities (社区), plausible names of people born
1925–1965, ages 60–100, about 30 % living alone, a few speaking Cantonese; resident ID numbers with the
district's code, the birth date, an odd/even sequence for the sex and a correct check digit; a terminal SIM,
a mobile and/or a home line (010), 0–3 contacts, a one-button terminal with the center's button map (some with
a low battery or on battery power), some past service records and open work orders.

Numbers never collide with each other nor with numbers already in the directory (the demo elders), and stay
out of the 138/139 ranges that the demo data and the tests use. The same ``seed`` on the same database and
clock gives the same elders."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from typing import Any

from callcenter.directory.bulk import BulkState
from callcenter.directory.numbers import fast_key
from callcenter.directory.store import DirectoryStore
from callcenter.directory.validation import id_check_digit

# district, ID-number code, centre (lat, lon), weight, {street: [community stems]}
DISTRICTS: list[tuple[str, str, tuple[float, float], int, dict[str, list[str]]]] = [
    ("东城区", "110101", (39.9288, 116.4164), 9, {
        "东华门街道": ["多福巷", "韶九", "智德"], "景山街道": ["吉祥", "黄化门", "景山东街"],
        "交道口街道": ["府学", "菊儿", "福祥"], "和平里街道": ["和平里东", "和平里西", "青年湖"],
        "东四街道": ["东四", "豆瓣", "礼士"]}),
    ("西城区", "110102", (39.9123, 116.3661), 11, {
        "德胜街道": ["新康", "六铺炕", "黄寺大街"], "新街口街道": ["西四北", "玉桃园", "前公用"],
        "什刹海街道": ["西海", "兴华", "柳荫街"], "月坛街道": ["三里河", "南礼士路", "木樨地"],
        "展览路街道": ["百万庄", "车公庄", "三塔"]}),
    ("朝阳区", "110105", (39.9215, 116.4435), 18, {
        "呼家楼街道": ["呼家楼北", "新街", "金台"], "八里庄街道": ["红庙", "甘露园", "十里堡"],
        "三里屯街道": ["幸福二村", "中纺里", "北三里屯"], "团结湖街道": ["团结湖北", "水碓子", "南北里"],
        "劲松街道": ["劲松北", "农光里", "磨房北里"]}),
    ("丰台区", "110106", (39.8585, 116.2867), 12, {
        "方庄街道": ["芳古园", "芳星园", "芳城园"], "右安门街道": ["玉林里", "开阳里", "翠林"],
        "太平桥街道": ["东管头", "太平桥东里", "三路居"], "卢沟桥街道": ["岳各庄", "小屯", "靛厂"],
        "马家堡街道": ["角门东里", "嘉园", "洋桥"]}),
    ("石景山区", "110107", (39.9056, 116.2229), 6, {
        "八宝山街道": ["鲁谷路", "玉泉西里", "永乐东"], "古城街道": ["古城南路", "水泥厂", "北小区"],
        "八角街道": ["八角北路", "杨庄", "体育场"], "鲁谷街道": ["六合园", "重聚园", "碣石坪"]}),
    ("海淀区", "110108", (39.9593, 116.2981), 16, {
        "中关村街道": ["科源", "黄庄", "中关村南"], "学院路街道": ["石油大院", "二里庄", "林大北路"],
        "万寿路街道": ["翠微", "复兴路", "万寿路西街"], "羊坊店街道": ["会城门", "茂林居", "铁西"],
        "北太平庄街道": ["太月园", "北三环中路", "明光"]}),
    ("通州区", "110112", (39.9097, 116.6566), 7, {
        "中仓街道": ["中仓", "新华东", "西营前街"], "新华街道": ["新华", "北关", "西海子"],
        "北苑街道": ["果园", "北苑", "新华联家园"]}),
    ("昌平区", "110114", (40.2206, 116.2312), 7, {
        "城北街道": ["西关", "东关", "南环"], "回龙观街道": ["龙腾苑", "龙跃苑", "流星花园"],
        "天通苑北街道": ["天通苑北第一", "天通西苑", "东沙各庄"]}),
]
SURNAMES = ("王" * 9 + "李" * 9 + "张" * 8 + "刘" * 7 + "陈" * 5 + "杨" * 4 + "赵" * 3 + "黄" * 3 + "周" * 3 + "吴" * 3
            + "徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范"
            + "金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
GIVEN_F = ("秀英", "桂英", "秀兰", "玉兰", "桂兰", "凤英", "淑珍", "淑兰", "玉珍", "秀珍", "兰英", "玉梅", "桂芳",
           "淑华", "凤兰", "素珍", "秀芳", "玉英", "金凤", "丽华", "淑英", "桂珍", "秀云", "凤琴", "玉华", "文英")
GIVEN_M = ("建国", "志强", "国华", "建华", "德明", "振华", "文华", "国强", "志明", "玉林", "春生", "福生", "明德",
           "永贵", "海山", "德胜", "长林", "宝山", "家福", "树林", "保国", "俊杰", "国庆", "子明", "金生", "立新")
YOUNG_F = ("芳", "娜", "敏", "静", "丽", "艳", "娟", "霞", "萍", "晓燕", "海燕", "红梅", "丽娟", "秀梅", "雪梅", "玉洁")
YOUNG_M = ("伟", "强", "磊", "军", "洋", "勇", "杰", "涛", "明", "超", "刚", "建军", "志刚", "海波", "建伟", "晓东")
RELATIONS = (("儿子", "M", True), ("女儿", "F", True), ("儿媳", "F", False), ("女婿", "M", False),
             ("孙子", "M", True), ("孙女", "F", True), ("侄子", "M", True), ("外甥女", "F", False),
             ("邻居", "", False), ("楼长", "", False))
CONDITIONS = ("高血压", "糖尿病", "冠心病", "脑梗后遗症", "慢阻肺", "骨质疏松", "听力差", "视力差", "关节炎",
              "阿尔茨海默病早期", "帕金森病", "装有心脏起搏器", "行动不便（助行器）", "轮椅出行")
NOTES = ("对青霉素过敏", "子女在外地", "每周社区医生上门一次", "夜间易起夜，注意跌倒", "独自服药需提醒",
         "耳背，说话请大声")
CARE_LEVELS = (("自理", 55), ("轻度失能", 25), ("中度失能", 13), ("重度失能", 7))
TERMINAL_TYPES = (("一键呼座机", 60), ("智能手表", 25), ("紧急呼叫器", 15))
MOBILE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "150", "151", "152", "153", "155", "156", "157",
                   "158", "159", "166", "176", "177", "180", "181", "182", "183", "185", "186", "187", "188", "189",
                   "191", "199")
DISPOSITIONS = ("咨询", "紧急求助已处理", "误按", "生活服务", "情感关怀", "回访")
RECORD_NOTES = ("老人询问助餐服务，已告知驿站电话", "老人头晕，已联系家属陪同就医", "误按，老人一切正常",
                "预约家政保洁", "老人情绪低落，聊天安抚", "回访上次维修情况，老人满意")
WORK_TYPES = ("上门探访", "助餐", "终端维修", "送药", "家政保洁")
DEFAULT_BUTTONS = {"12349": "emergency", "12340": "family", "12341": "care_center", "12342": "care_station",
                   "12343": "committee", "12344": "property", "12346": "complaint", "12347": "taxi"}


class _Maker:
    def __init__(self, rng: random.Random, state: BulkState, now: dt.datetime, today: dt.date,
                 buttons: Mapping[str, str]) -> None:
        self.rng, self.state, self.now, self.today = rng, state, now, today
        self.buttons = dict(buttons)
        self.districts = [d for d in DISTRICTS]
        self.weights = [d[3] for d in DISTRICTS]
        self.rows: dict[str, list[dict[str, Any]]] = {"elders": [], "phones": [], "contacts": [], "terminals": [],
                                                      "records": [], "work_orders": []}

    def pick(self, pairs: tuple[tuple[str, int], ...]) -> str:
        return self.rng.choices([p[0] for p in pairs], [p[1] for p in pairs])[0]

    def mobile(self) -> str:
        while True:
            number = self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}"
            if number not in self.state.numbers and fast_key(number, "CN") == number:
                self.state.numbers.add(number)
                return number

    def landline(self) -> str:
        while True:
            number = "010" + self.rng.choice("568") + f"{self.rng.randrange(10**7):07d}"
            if number not in self.state.numbers and fast_key(number, "CN") == number:
                self.state.numbers.add(number)
                return number

    def id_number(self, code: str, birth: dt.date, sex: str) -> str:
        while True:
            sequence = self.rng.randrange(500) * 2 + (1 if sex == "M" else 0)
            first17 = f"{code}{birth:%Y%m%d}{sequence:03d}"
            number = first17 + id_check_digit(first17)
            if number not in self.state.id_numbers:
                self.state.id_numbers.add(number)
                return number

    def elder(self, elder_id: int) -> None:
        rng = self.rng
        district, code, (lat, lon), _, streets = rng.choices(self.districts, self.weights)[0]
        street = rng.choice(list(streets))
        stem = rng.choice(streets[street])
        sex = "F" if rng.random() < 0.57 else "M"
        age = min(100, 60 + int(abs(rng.gauss(0, 1)) * 14) + rng.randrange(4))
        birth = self.today - dt.timedelta(days=age * 365 + rng.randrange(365) + age // 4)
        family = rng.choice(SURNAMES)
        name = family + rng.choice(GIVEN_F if sex == "F" else GIVEN_M)
        if rng.random() < 0.15:  # a one-character given name
            name = family + rng.choice([n for n in (YOUNG_F if sex == "F" else YOUNG_M) if len(n) == 1])
        title = family + (("奶奶" if sex == "F" else "爷爷") if age >= 70 else ("阿姨" if sex == "F" else "叔叔"))
        conditions = rng.sample(CONDITIONS, rng.choice((0, 1, 1, 2, 2, 3)))
        notes = "，".join(conditions) + (("；" if conditions else "") + rng.choice(NOTES) if rng.random() < 0.3 else "")
        self.rows["elders"].append({
            "id": elder_id, "name": name, "title": title, "sex": sex, "birth_date": birth,
            "id_number": self.id_number(code, birth, sex), "district": district, "street": street,
            "community": stem + "社区",
            "address": f"{stem}{rng.randrange(1, 30)}号楼{rng.randrange(1, 7)}单元{rng.randrange(1, 19)}"
                       f"{rng.randrange(1, 5):02d}室",
            "lat": round(lat + rng.uniform(-0.03, 0.03), 6), "lon": round(lon + rng.uniform(-0.04, 0.04), 6),
            "language": "yue" if rng.random() < 0.03 else "cmn", "living_alone": rng.random() < 0.3,
            "health_notes": notes, "care_level": self.pick(CARE_LEVELS), "created_at": self.now,
            "updated_at": self.now})
        has_terminal = rng.random() < 0.9
        phones = []
        if has_terminal:
            phones.append(("terminal", self.mobile()))
        if rng.random() < 0.6 or not phones:
            phones.append(("mobile", self.mobile()))
        if rng.random() < 0.7:
            phones.append(("home", self.landline()))
        self.rows["phones"] += [{"elder_id": elder_id, "number": n, "raw": n, "kind": k} for k, n in phones]
        for order in range(1, rng.choice((0, 1, 1, 2, 2, 2, 3, 3)) + 1):
            relation, their_sex, kin = rng.choice(RELATIONS)
            their_sex = their_sex or rng.choice("FM")
            contact = (family if kin else rng.choice(SURNAMES)) + rng.choice(YOUNG_F if their_sex == "F" else YOUNG_M)
            number = self.mobile()
            self.rows["contacts"].append({"elder_id": elder_id, "name": contact, "relation": relation,
                                          "number": number, "raw": number, "order": order})
        if has_terminal:
            self.terminal(elder_id)
        self.history(elder_id, phones[0][1], street)

    def terminal(self, elder_id: int) -> None:
        rng = self.rng
        installed = self.today - dt.timedelta(days=7 + rng.randrange(6 * 365))
        while True:
            serial = f"YJH{installed:%Y}{rng.randrange(10**7):07d}"
            if serial not in self.state.serials:
                self.state.serials.add(serial)
                break
        stale = rng.random() < 0.03
        heartbeat = self.now - dt.timedelta(minutes=rng.randrange(60) + (rng.randrange(2, 20) * 1440 if stale else 0))
        self.rows["terminals"].append({
            "elder_id": elder_id, "type": self.pick(TERMINAL_TYPES), "serial": serial, "installed": installed,
            "buttons": dict(self.buttons), "last_heartbeat": heartbeat,
            "battery": "low" if rng.random() < 0.06 else "ok",
            "power": "lost" if stale else ("battery" if rng.random() < 0.12 else "ac")})

    def history(self, elder_id: int, number: str, street: str) -> None:
        rng = self.rng
        if rng.random() < 0.3:
            for _ in range(rng.randrange(1, 4)):
                at = self.now - dt.timedelta(minutes=rng.randrange(30, 180 * 1440))
                kind = rng.randrange(len(DISPOSITIONS))
                self.rows["records"].append({
                    "at": at, "elder_id": elder_id, "number": number, "call_id": f"demo-{elder_id}-{at:%Y%m%d%H%M}",
                    "operator": rng.choice(("op1001", "op1002")), "disposition": DISPOSITIONS[kind],
                    "notes": RECORD_NOTES[kind], "direction": "inbound"})
        if rng.random() < 0.04:
            self.rows["work_orders"].append({
                "created_at": self.now - dt.timedelta(hours=rng.randrange(1, 72)), "elder_id": elder_id,
                "call_id": None, "type": rng.choice(WORK_TYPES), "assignee": street.removesuffix("街道") + "养老驿站",
                "due_at": self.now + dt.timedelta(hours=rng.randrange(2, 72)),
                "status": rng.choice(("open", "open", "in_progress")), "notes": "", "feedback": "",
                "created_by": "demo"})


async def generate(store: DirectoryStore, count: int, *, seed: int = 1,
                   buttons: Mapping[str, str] | None = None) -> int:
    """Add ``count`` demo elders to the directory (one transaction); gives how many were added."""
    if count <= 0:
        return 0
    now = store.now()

    def make(first: int, state: BulkState) -> dict[str, list[dict[str, Any]]]:
        maker = _Maker(random.Random(seed), state, now, store.today(), buttons or store.buttons or DEFAULT_BUTTONS)
        for elder_id in range(first, first + count):
            maker.elder(elder_id)
        return maker.rows

    return await store.bulk(make)
