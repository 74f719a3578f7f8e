"""The desktop's words in Chinese and English, and which of the two a request gets."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from agents.auth import Session

LANGS: Final = ("zh", "en")
DEFAULT_LANG: Final = "zh"

STRINGS: Final[dict[str, dict[str, str]]] = {
    "zh": {
        "app_title": "平安通呼叫中心", "status_title": "运行状态", "login_title": "坐席登录",
        "login_subtitle": "请使用您的坐席账号登录", "username": "用户名", "password": "密码",
        "login": "登录", "logout": "退出", "other_lang": "English",
        "login_failed": "用户名或密码不正确。",
        "login_locked": "登录失败次数过多，请 {minutes} 分钟后再试。",
        "login_expired": "登录页面已过期，请重新输入。",
        "node": "节点", "sip_listen": "SIP 监听", "updated": "更新于", "refresh_note": "每 5 秒自动刷新",
        "active_calls": "当前通话", "emergency_calls": "紧急通话", "registrations": "注册设备",
        "trunks": "中继线", "counters": "计数器", "channels_in_use": "中继占用",
        "call_id": "呼叫 ID", "direction": "方向", "caller": "主叫", "dialled": "被叫", "state": "状态",
        "route": "路由", "trunk": "中继", "emergency": "紧急", "duration": "时长",
        "no_calls": "当前没有通话", "no_registrations": "没有已注册的设备", "no_trunks": "未配置中继线",
        "aor": "账号 (AOR)", "contact": "联系地址", "expires": "剩余 (秒)",
        "trunk_name": "名称", "channels": "占用 / 通道", "reserve": "紧急预留", "registered": "注册",
        "yes": "是", "no": "否", "not_registering": "—",
        "transport": "传输层", "transactions": "事务层", "inbound": "呼入", "outbound": "呼出", "auth": "认证",
        "forbidden": "您的角色无权访问此页面。", "back": "返回首页",
        "role_operator": "话务员", "role_supervisor": "班长", "role_auditor": "审计员", "role_admin": "管理员",
        "dir_inbound": "呼入", "dir_outbound": "呼出",
        "state_offered": "呼叫中", "state_ringing": "振铃", "state_answered": "已应答",
        "state_confirmed": "通话中", "state_ending": "挂断中", "state_ended": "已结束",
        "operators": "坐席", "no_operators": "未配置坐席", "operator": "坐席", "since": "持续",
        "queues": "排队", "waiting": "排队中", "longest_wait": "最长等待", "no_waiting": "没有来电在排队",
        "op_logged_out": "未登录", "op_available": "空闲", "op_reserved": "振铃", "op_talking": "通话中",
        "op_wrap_up": "话后处理", "op_paused": "暂停", "acd": "排队机", "callbacks": "回访",
    },
    "en": {
        "app_title": "Elder-care Call Center", "status_title": "Status", "login_title": "Operator login",
        "login_subtitle": "Log in with your desk account", "username": "Username", "password": "Password",
        "login": "Log in", "logout": "Log out", "other_lang": "中文",
        "login_failed": "The username or password is not correct.",
        "login_locked": "Too many failed logins. Try again in {minutes} minutes.",
        "login_expired": "The login page had expired; please enter your details again.",
        "node": "Node", "sip_listen": "SIP listen", "updated": "Updated", "refresh_note": "refreshes every 5 s",
        "active_calls": "Active calls", "emergency_calls": "Emergency calls", "registrations": "Registered devices",
        "trunks": "Trunks", "counters": "Counters", "channels_in_use": "Trunk channels in use",
        "call_id": "Call ID", "direction": "Direction", "caller": "Caller", "dialled": "Dialled", "state": "State",
        "route": "Route", "trunk": "Trunk", "emergency": "Emergency", "duration": "Duration",
        "no_calls": "No active calls", "no_registrations": "No registered devices", "no_trunks": "No trunks",
        "aor": "Account (AOR)", "contact": "Contact", "expires": "Expires (s)",
        "trunk_name": "Name", "channels": "Used / total", "reserve": "Reserve", "registered": "Registered",
        "yes": "yes", "no": "no", "not_registering": "—",
        "transport": "Transport", "transactions": "Transactions", "inbound": "Inbound", "outbound": "Outbound",
        "auth": "Authentication",
        "forbidden": "Your role may not open this page.", "back": "Back to the status page",
        "role_operator": "Operator", "role_supervisor": "Supervisor", "role_auditor": "Auditor",
        "role_admin": "Administrator",
        "dir_inbound": "in", "dir_outbound": "out",
        "state_offered": "offered", "state_ringing": "ringing", "state_answered": "answered",
        "state_confirmed": "talking", "state_ending": "ending", "state_ended": "ended",
        "operators": "Operators", "no_operators": "No operators configured", "operator": "Operator",
        "since": "For", "queues": "Queues", "waiting": "Waiting", "longest_wait": "Longest wait",
        "no_waiting": "Nobody is waiting", "op_logged_out": "logged out", "op_available": "available",
        "op_reserved": "ringing", "op_talking": "talking", "op_wrap_up": "wrap-up", "op_paused": "paused",
        "acd": "ACD", "callbacks": "Callbacks",
    },
}


def choose_lang(request: web.Request, session: Session | None = None) -> str:
    """``?lang=`` when it names a language we have, else the session's language, else Chinese."""
    asked = request.query.get("lang")
    if asked in LANGS:
        return asked
    return session.lang if session is not None else DEFAULT_LANG
