"""Coded errors: one error type for the whole project, with a stable code and two messages.

Every refusal that crosses a boundary (a network message, the back-office API, the CLI)
carries one of the codes below. Codes never change once published; docs/protocol.md lists
them. Messages are templates filled with keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "ACCOUNT_LOCKED",
    "ADDRESS_NUMBER_CONFLICT",
    "ALL",
    "ATTACHMENT_INVALID",
    "BACKUP_DESTINATION_EXISTS",
    "BACKUP_FAILED",
    "BACKUP_INVALID",
    "BACKUP_OF_ANOTHER_PARTY",
    "BAD_REQUEST",
    "BATCH_TOO_LARGE",
    "BODY_TOO_LARGE",
    "BULK_QUERY_FILE_INVALID",
    "BULK_QUERY_LINE_INVALID",
    "BULK_QUERY_NOT_ENDED",
    "CERTIFICATE_NOT_AUTHORIZED",
    "CONFIGURATION_INVALID",
    "CONTENT_DIGEST_MISMATCH",
    "CONTROL_UNAUTHORIZED",
    "CSRF_REJECTED",
    "DATABASE_UNAVAILABLE",
    "DELEGATION_NOT_PERMITTED",
    "FILE_UNUSABLE",
    "FUGO_INVALID",
    "FUGO_NOT_ACQUIRED",
    "FUGO_UNKNOWN",
    "HELD_ALREADY_DECIDED",
    "HELD_PERMIT_EXPIRED",
    "HOLD_EXPIRED",
    "IDEMPOTENCY_KEY_REUSED",
    "INTERNAL",
    "INVALID_CODE",
    "INVALID_ITEM_VALUE",
    "INVALID_STAFF_NAME",
    "LOGIN_FAILED",
    "NETWORK_UNAVAILABLE",
    "NOTICE_INVALID",
    "NOT_A_PROVIDER_OF",
    "NOT_PERMITTED",
    "NOT_THE_PORTAL",
    "NO_PORTAL_ACCOUNT",
    "PAGE_NOT_FOUND",
    "PARTIES_IN_ONE_PROCESS",
    "PARTY_NOT_RUNNING",
    "PARTY_RUNNING",
    "PAYLOAD_INVALID",
    "PAYLOAD_SIGNATURE_INVALID",
    "PAYLOAD_UNREADABLE",
    "PERMITTED_LIST_EXPIRED",
    "PERMITTED_LIST_MISSING",
    "PERMITTED_LIST_SIGNATURE",
    "PERMIT_EXPIRED",
    "PERMIT_MISMATCH",
    "PERMIT_NOT_YET_VALID",
    "PERMIT_REPLAYED",
    "PERMIT_SIGNATURE_INVALID",
    "PERMIT_WRONG_PROVIDER",
    "PERSON_CONFLICT",
    "PORTAL_SIGN_IN_FAILED",
    "PROVISION_REFUSED",
    "RECORD_ID_EXISTS",
    "REPLICA_DATES_INVALID",
    "REPLICA_FILE_INVALID",
    "REPLICA_RECORD_TOO_LARGE",
    "RESTORE_FAILED",
    "RESTORE_VERIFICATION_FAILED",
    "RESULT_FILE_EXISTS",
    "ROLE_FORBIDDEN",
    "SENDER_NOT_PARTY",
    "SESSION_EXPIRED",
    "STAFF_USER_EXISTS",
    "SYSTEM_NOT_AUTHORIZED",
    "UNEXPECTED_MESSAGE",
    "UNKNOWN_ADDRESS_NUMBER",
    "UNKNOWN_ATTACHMENT",
    "UNKNOWN_BULK_QUERY",
    "UNKNOWN_DATA_SET",
    "UNKNOWN_FAULT",
    "UNKNOWN_HELD_PROVISION",
    "UNKNOWN_INFORMATION_NAME",
    "UNKNOWN_INSTITUTION",
    "UNKNOWN_ITEM",
    "UNKNOWN_NOTICE",
    "UNKNOWN_PARTY",
    "UNKNOWN_PERSON",
    "UNKNOWN_PROCEDURE",
    "UNKNOWN_QUERY",
    "UNKNOWN_RECORD",
    "UNKNOWN_RESIDENT",
    "UNKNOWN_ROLE",
    "UNKNOWN_SELF_INFORMATION",
    "UNKNOWN_STAFF_USER",
    "UNKNOWN_TRANSACTION",
    "USAGE_INVALID",
    "WAIT_TIMED_OUT",
    "WEAK_PASSWORD",
    "XML_DOCTYPE_FORBIDDEN",
    "XML_MALFORMED",
    "XML_SCHEMA_INVALID",
    "XML_TOO_DEEP",
    "XML_TOO_LARGE",
    "XML_TOO_MANY_ELEMENTS",
    "ErrorKind",
    "RenkeiError",
]


@dataclass(frozen=True)
class ErrorKind:
    """A published error: stable code, HTTP status, English and Japanese message templates."""

    code: str
    status: int
    en: str
    ja: str


class RenkeiError(Exception):
    """A refusal with a stable code; raised by pure logic, rendered at the edges."""

    def __init__(self, kind: ErrorKind, **params: Any) -> None:
        self.kind = kind
        self.params = params
        super().__init__(f"{kind.code}: {self.message_en}")

    @property
    def code(self) -> str:
        return self.kind.code

    @property
    def status(self) -> int:
        return self.kind.status

    @property
    def message_en(self) -> str:
        return self.kind.en.format_map(_Lenient(_readable(self.params, "en")))

    @property
    def message_ja(self) -> str:
        return self.kind.ja.format_map(_Lenient(_readable(self.params, "ja")))


JAPAN = ZoneInfo("Asia/Tokyo")


def _readable(params: dict[str, Any], lang: str) -> dict[str, Any]:
    """The values of a message as a person reads them: a time (an aware datetime) in Japan
    time, ``2026年12月2日 03:20`` in Japanese and ``2026-12-02 03:20 JST`` in English."""
    shown = dict(params)
    for key, value in params.items():
        if isinstance(value, datetime) and value.tzinfo is not None:
            local = value.astimezone(JAPAN)
            shown[key] = (
                f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
                if lang == "ja"
                else f"{local:%Y-%m-%d %H:%M} JST"
            )
    return shown


class _Lenient(dict[str, Any]):
    """Template values where a missing one shows as its placeholder instead of failing."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _kind(code: str, status: int, en: str, ja: str) -> ErrorKind:
    kind = ErrorKind(code, status, en, ja)
    if code in ALL:
        raise ValueError(f"duplicate error code {code}")
    ALL[code] = kind
    return kind


ALL: dict[str, ErrorKind] = {}

# XML and message format
XML_TOO_LARGE = _kind(
    "XmlTooLarge",
    413,
    "The document is {size} bytes; at most {limit} are accepted.",
    "文書が{size}バイトです。受け付けられるのは{limit}バイトまでです。",
)
XML_DOCTYPE_FORBIDDEN = _kind(
    "XmlDoctypeForbidden",
    400,
    "Document type declarations and entities are not accepted.",
    "文書型宣言及び実体参照は受け付けられません。",
)
XML_TOO_DEEP = _kind(
    "XmlTooDeep",
    400,
    "The document nests elements deeper than {limit} levels.",
    "文書の要素の入れ子が{limit}階層を超えています。",
)
XML_TOO_MANY_ELEMENTS = _kind(
    "XmlTooManyElements",
    413,
    "An element of the document holds more than {limit} elements.",
    "文書の要素が{limit}個を超える要素を含んでいます。",
)
XML_MALFORMED = _kind(
    "XmlMalformed",
    400,
    "The document is not well-formed XML: {detail}",
    "文書が整形式のXMLではありません: {detail}",
)
XML_SCHEMA_INVALID = _kind(
    "XmlSchemaInvalid",
    400,
    "The {message_type} message does not conform to its schema: {detail}",
    "{message_type}電文がスキーマに適合しません: {detail}",
)
BATCH_TOO_LARGE = _kind(
    "BatchTooLarge",
    413,
    "The batch holds {count} messages; at most {limit} are accepted in one batch.",
    "一括送信に{count}件の電文が含まれています。一度に受け付けられるのは{limit}件までです。",
)
UNEXPECTED_MESSAGE = _kind(
    "UnexpectedMessage",
    400,
    "Expected a {expected} message, received {received}.",
    "{expected}電文を想定していましたが、{received}電文を受信しました。",
)

# Identifiers and catalogue
INVALID_CODE = _kind(
    "InvalidCode",
    400,
    "{value!r} is not a valid {what}.",
    "{value!r}は有効な{what}ではありません。",
)
UNKNOWN_INFORMATION_NAME = _kind(
    "UnknownInformationName",
    400,
    "Information name {code} is not in the data standard layout.",
    "特定個人情報名{code}はデータ標準レイアウトに存在しません。",
)
UNKNOWN_DATA_SET = _kind(
    "UnknownDataSet",
    400,
    "Data set {data_set} is not part of information name {code}.",
    "データセット{data_set}は特定個人情報名{code}に含まれません。",
)
UNKNOWN_ITEM = _kind(
    "UnknownItem",
    400,
    "Item {item} is not part of data set {data_set} of information name {code}.",
    "項目{item}は特定個人情報名{code}のデータセット{data_set}に含まれません。",
)
UNKNOWN_INSTITUTION = _kind(
    "UnknownInstitution",
    400,
    "Institution {code} is not registered on the network.",
    "機関{code}は情報提供ネットワークシステムに登録されていません。",
)

# Persons and 符号
FUGO_NOT_ACQUIRED = _kind(
    "FugoNotAcquired",
    409,
    "The code (fugo) of {integrated_address_number} has not been acquired.",
    "{integrated_address_number}は符号が未取得です",
)
UNKNOWN_PERSON = _kind(
    "UnknownPerson",
    404,
    "No person with integrated address number {integrated_address_number} is registered.",
    "団体内統合宛名番号{integrated_address_number}の対象者は登録されていません。",
)
PERSON_CONFLICT = _kind(
    "PersonConflict",
    409,
    "Integrated address number {integrated_address_number} is already linked to another person.",
    "団体内統合宛名番号{integrated_address_number}は既に別の者に紐付けられています。",
)
ADDRESS_NUMBER_CONFLICT = _kind(
    "AddressNumberConflict",
    409,
    "Address number {address_number} is already linked to another person.",
    "宛名番号{address_number}は既に別の者に紐付けられています。",
)
UNKNOWN_ADDRESS_NUMBER = _kind(
    "UnknownAddressNumber",
    404,
    "No person with address number {address_number} is registered.",
    "宛名番号{address_number}の対象者は登録されていません。",
)
UNKNOWN_RESIDENT = _kind(
    "UnknownResident",
    404,
    "The resident registry has no person with this individual number.",
    "住民基本台帳ネットワークシステムに当該個人番号の者が存在しません。",
)
FUGO_INVALID = _kind(
    "FugoInvalid",
    400,
    "The code (fugo) was not issued to the requesting institution.",
    "符号が照会機関に対して発行されたものではありません。",
)
FUGO_UNKNOWN = _kind(
    "FugoUnknown",
    404,
    "No person at this institution is linked to the code (fugo) in the permit.",
    "許可証の符号に紐付く者が当機関に存在しません。",
)

# Replica records
RECORD_ID_EXISTS = _kind(
    "RecordIdExists",
    409,
    "Record identification number {record_id} already exists.",
    "「レコード識別番号」{record_id}が既に存在します。",
)
UNKNOWN_RECORD = _kind(
    "UnknownRecord",
    404,
    "No replica record {record_id} exists.",
    "副本レコード{record_id}は存在しません。",
)
NOT_A_PROVIDER_OF = _kind(
    "NotAProviderOf",
    400,
    "This institution does not provide information name {code}.",
    "当機関は特定個人情報名{code}の情報提供者ではありません。",
)

REPLICA_DATES_INVALID = _kind(
    "ReplicaDatesInvalid",
    400,
    "Record {record_id}: the publication dates are not valid ({detail}).",
    "レコード{record_id}: 公開日又は公開終了日が正しくありません({detail})。",
)
REPLICA_RECORD_TOO_LARGE = _kind(
    "ReplicaRecordTooLarge",
    413,
    "Record {record_id} is {size} bytes; at most {limit} are accepted per record.",
    "レコード{record_id}が{size}バイトです。1レコードに受け付けられるのは{limit}バイトまでです。",
)
REPLICA_FILE_INVALID = _kind(
    "ReplicaFileInvalid",
    400,
    "The replica file cannot be processed: {detail}",
    "副本ファイルを処理できません: {detail}",
)

# Bulk queries (一括照会)
BULK_QUERY_FILE_INVALID = _kind(
    "BulkQueryFileInvalid",
    400,
    "The bulk-query file cannot be read: {detail}",
    "一括照会ファイルを読み込めません: {detail}",
)
BULK_QUERY_LINE_INVALID = _kind(
    "BulkQueryLineInvalid",
    400,
    "Line {line}, field {field}: {detail}",
    "{line}行目 項目「{field}」: {detail}",
)
UNKNOWN_BULK_QUERY = _kind(
    "UnknownBulkQuery",
    404,
    "Bulk query {bulk_query_id} is unknown.",
    "一括照会{bulk_query_id}は存在しません。",
)
BULK_QUERY_NOT_ENDED = _kind(
    "BulkQueryNotEnded",
    409,
    "Bulk query {bulk_query_id} has not ended: {ended} of {lines} lines have ended.",
    "一括照会{bulk_query_id}は終了していません({lines}行中{ended}行が終了)。",
)

# Permitted-query list
NOT_PERMITTED = _kind(
    "NotPermitted",
    403,
    "Querying information name {code} is not permitted for procedure {procedure}.",
    "特定個人情報名{code}の照会は許可されていません",
)
DELEGATION_NOT_PERMITTED = _kind(
    "DelegationNotPermitted",
    403,
    "Institution {delegate} may not act for institution {delegator}: the permitted-query list"
    " has no such delegation.",
    "機関{delegate}は機関{delegator}の委任を受けていません(照会許可照合リストに委任がありません)。",
)
PERMITTED_LIST_EXPIRED = _kind(
    "PermittedListExpired",
    503,
    "No valid permitted-query list is held: the latest expired at {expires_at}.",
    "有効な照会許可照合リストを保持していません(最新版の有効期限: {expires_at})。",
)
PERMITTED_LIST_MISSING = _kind(
    "PermittedListMissing",
    503,
    "No permitted-query list has been received from the network yet.",
    "照会許可照合リストを未だ受信していません。",
)
PERMITTED_LIST_SIGNATURE = _kind(
    "PermittedListSignatureInvalid",
    502,
    "The permitted-query list is not signed by the network.",
    "照会許可照合リストの署名が情報提供ネットワークシステムのものではありません。",
)

# Permits
PERMIT_SIGNATURE_INVALID = _kind(
    "PermitSignatureInvalid",
    403,
    "The permit is not signed by the network.",
    "情報提供許可証の署名が正しくありません。",
)
PERMIT_EXPIRED = _kind(
    "PermitExpired",
    403,
    "The permit for transaction {transaction_number} expired at {expires_at}.",
    "処理通番{transaction_number}の情報提供許可証は{expires_at}に有効期限が切れています。",
)
PERMIT_NOT_YET_VALID = _kind(
    "PermitNotYetValid",
    403,
    "The permit for transaction {transaction_number} is not valid before {issued_at}.",
    "処理通番{transaction_number}の情報提供許可証は{issued_at}より前には有効ではありません。",
)
PERMIT_WRONG_PROVIDER = _kind(
    "PermitWrongProvider",
    403,
    "The permit is addressed to institution {provider}, not to this one.",
    "情報提供許可証の宛先は機関{provider}であり、当機関ではありません。",
)
PERMIT_REPLAYED = _kind(
    "PermitReplayed",
    409,
    "The permit for transaction {transaction_number} has already been used.",
    "処理通番{transaction_number}の情報提供許可証は既に使用されています。",
)
PERMIT_MISMATCH = _kind(
    "PermitMismatch",
    400,
    "The route does not match the permit.",
    "経路情報が情報提供許可証と一致しません。",
)

# Payloads and results
PAYLOAD_UNREADABLE = _kind(
    "PayloadUnreadable",
    400,
    "The provision payload cannot be decrypted by this institution.",
    "提供データを当機関で復号できません。",
)
PAYLOAD_INVALID = _kind(
    "PayloadInvalid",
    400,
    "The provision payload of transaction {transaction_number} names data sets or items that"
    " the data standard layout does not have.",
    "処理通番{transaction_number}の提供データに、データ標準レイアウトに無いデータセット又は項目が"
    "含まれています。",
)
PAYLOAD_SIGNATURE_INVALID = _kind(
    "PayloadSignatureInvalid",
    400,
    "The provision payload is not signed by the provider of transaction {transaction_number}.",
    "提供データの署名が処理通番{transaction_number}の情報提供者のものではありません。",
)
UNKNOWN_TRANSACTION = _kind(
    "UnknownTransaction",
    404,
    "Transaction {transaction_number} is unknown here.",
    "処理通番{transaction_number}は当機関では不明です。",
)
UNKNOWN_QUERY = _kind(
    "UnknownQuery",
    404,
    "Query {query_id} is unknown.",
    "照会{query_id}は存在しません。",
)
CONTENT_DIGEST_MISMATCH = _kind(
    "ContentDigestMismatch",
    400,
    "The message arrived damaged: it does not match its Content-Digest.",
    "メッセージが破損して届きました(Content-Digestと一致しません)。",
)
IDEMPOTENCY_KEY_REUSED = _kind(
    "IdempotencyKeyReused",
    422,
    "The idempotency key {key} was used for a different request.",
    "冪等キー{key}は別の依頼に使われています。",
)

# Authentication of peers
CERTIFICATE_NOT_AUTHORIZED = _kind(
    "CertificateNotAuthorized",
    403,
    "The client certificate {subject} is not authorized for this service.",
    "クライアント証明書{subject}はこのサービスの利用を許可されていません。",
)
SYSTEM_NOT_AUTHORIZED = _kind(
    "SystemNotAuthorized",
    403,
    "Back-office system {system} is not authorized for {what}.",
    "業務システム{system}には{what_ja}の権限がありません。",
)
SENDER_NOT_PARTY = _kind(
    "SenderNotParty",
    403,
    "Institution {sender} is not the provider of transaction {transaction_number}.",
    "機関{sender}は処理通番{transaction_number}の情報提供者ではありません。",
)

# Requests to the back-office API
BODY_TOO_LARGE = _kind(
    "BodyTooLarge",
    413,
    "The request body is larger than {limit} bytes, the most this service accepts.",
    "要求の本文が、このサービスが受け付ける{limit}バイトを超えています。",
)
BAD_REQUEST = _kind(
    "BadRequest",
    400,
    "The request is malformed: {detail}",
    "要求の形式が正しくありません: {detail}",
)
NETWORK_UNAVAILABLE = _kind(
    "NetworkUnavailable",
    503,
    "The network could not be reached: {detail}",
    "情報提供ネットワークシステムに接続できません: {detail}",
)
INTERNAL = _kind(
    "Internal",
    500,
    "An internal error occurred; it has been logged.",
    "内部エラーが発生しました。ログに記録されています。",
)

# Catalogue (added with codes/catalogue.py)
UNKNOWN_PROCEDURE = _kind(
    "UnknownProcedure",
    400,
    "Procedure {code} is not in the catalogue.",
    "事務手続{code}はカタログに存在しません。",
)
INVALID_ITEM_VALUE = _kind(
    "InvalidItemValue",
    400,
    "The value of item {item} ({name}) is not a valid {type} of at most {max_length} characters.",
    "項目{item}({name_ja})の値が{max_length}文字以内の{type_ja}として有効ではありません。",
)

# Staff authentication and authorization (added with middleware/staff.py)
LOGIN_FAILED = _kind(
    "LoginFailed",
    401,
    "Login failed: the user name, password or one-time code is not correct.",
    "ログインに失敗しました。利用者名、パスワード又はワンタイムパスワードが正しくありません。",
)
ACCOUNT_LOCKED = _kind(
    "AccountLocked",
    423,
    "This account is locked after repeated failed logins; try again after {until}.",
    "ログインの失敗が続いたため、このアカウントはロックされています。{until}以降に再度お試しください。",
)
SESSION_EXPIRED = _kind(
    "SessionExpired",
    401,
    "The session has expired or is not valid; log in again.",
    "セッションの有効期限が切れたか、セッションが無効です。再度ログインしてください。",
)
CSRF_REJECTED = _kind(
    "CsrfRejected",
    403,
    "The form's CSRF token is missing or wrong; reload the page and try again.",
    "フォームのCSRFトークンが無いか正しくありません。画面を再読み込みしてやり直してください。",
)
ROLE_FORBIDDEN = _kind(
    "RoleForbidden",
    403,
    "This operation requires the role {role}.",
    "この操作には{role}の権限が必要です。",
)
UNKNOWN_STAFF_USER = _kind(
    "UnknownStaffUser",
    404,
    "No staff user {name} exists.",
    "職員利用者{name}は存在しません。",
)
STAFF_USER_EXISTS = _kind(
    "StaffUserExists",
    409,
    "A staff user {name} already exists.",
    "職員利用者{name}は既に存在します。",
)
WEAK_PASSWORD = _kind(
    "WeakPassword",
    400,
    "The password must have at least {minimum} and at most {maximum} characters.",
    "パスワードは{minimum}文字以上{maximum}文字以下にしてください。",
)
UNKNOWN_ROLE = _kind(
    "UnknownRole",
    400,
    "{role!r} is not a staff role; the roles are {roles}.",
    "{role!r}は職員の権限ではありません(権限: {roles})。",
)
INVALID_STAFF_NAME = _kind(
    "InvalidStaffName",
    400,
    "{name!r} cannot be a staff user name: use 1 to 64 lower-case letters, digits, '.', '_' or"
    " '-', starting with a letter, and not a reserved name.",
    "{name!r}は職員の利用者名に使用できません。英小文字で始まる64文字以内の英小文字、数字、"
    "「.」「_」「-」を使用し、予約名は使用しないでください。",
)

# Held provisions (自動応答不可フラグ)
PROVISION_REFUSED = _kind(
    "ProvisionRefused",
    403,
    "The provider's staff reviewed the held provision and refused it.",
    "情報提供者の職員が保留中の情報提供を審査し、提供不可としました。",
)
HELD_PERMIT_EXPIRED = _kind(
    "HeldPermitExpired",
    410,
    "The permit expired before the held provision was decided.",
    "保留中の情報提供について判断される前に情報提供許可証の有効期限が切れました。",
)
HOLD_EXPIRED = _kind(
    "HoldExpired",
    410,
    "The held provision was not decided before its hold ended at {expires_at}.",
    "保留中の情報提供について、保留期限({expires_at})までに判断されませんでした。",
)
UNKNOWN_HELD_PROVISION = _kind(
    "UnknownHeldProvision",
    404,
    "No held provision has transaction number {transaction_number}.",
    "処理通番{transaction_number}の保留中の情報提供は存在しません。",
)
HELD_ALREADY_DECIDED = _kind(
    "HeldAlreadyDecided",
    409,
    "The held provision {transaction_number} was already decided ({state}).",
    "処理通番{transaction_number}の保留中の情報提供は既に判断済みです({state})。",
)

# The operator console
PAGE_NOT_FOUND = _kind(
    "PageNotFound",
    404,
    "There is no page at this address.",
    "このアドレスのページはありません。",
)

# The control API (docs/control.md)
CONTROL_UNAUTHORIZED = _kind(
    "ControlUnauthorized",
    401,
    "The control API needs the token of this network (Authorization: Bearer ...).",
    "制御APIの利用には、このネットワークのトークンが必要です(Authorization: Bearer ...)。",
)
UNKNOWN_FAULT = _kind(
    "UnknownFault",
    404,
    "No fault {name} is in force.",
    "障害{name}は設定されていません。",
)
UNKNOWN_PARTY = _kind(
    "UnknownParty",
    404,
    "No party process {name} runs in this network (its processes: {parties}).",
    "このネットワークにプロセス{name}はありません(プロセス: {parties})。",
)
PARTIES_IN_ONE_PROCESS = _kind(
    "PartiesInOneProcess",
    409,
    "Every party runs in one process (--single-process): none can be stopped, started or "
    "killed alone.",
    "全ての構成要素が一つのプロセスで動作しているため(--single-process)、個別に停止、起動又は"
    "強制終了することはできません。",
)
PARTY_NOT_RUNNING = _kind(
    "PartyNotRunning",
    409,
    "Process {name} is not running ({state}): there is nothing to kill.",
    "プロセス{name}は動作していないため({state})、強制終了できません。",
)

# Backup and restore (renkei backup, renkei restore; docs/operations.md)
BACKUP_DESTINATION_EXISTS = _kind(
    "BackupDestinationExists",
    409,
    "{path} exists and is not empty: a backup goes into a new or empty directory.",
    "{path}は既に存在し、空ではありません。バックアップは新しい(又は空の)ディレクトリに作成します。",
)
BACKUP_FAILED = _kind(
    "BackupFailed",
    500,
    "The backup of {party} failed: {detail}",
    "{party}のバックアップに失敗しました: {detail}",
)
BACKUP_INVALID = _kind(
    "BackupInvalid",
    422,
    "{path} is not a usable backup: {detail}",
    "{path}は利用できるバックアップではありません: {detail}",
)
BACKUP_OF_ANOTHER_PARTY = _kind(
    "BackupOfAnotherParty",
    422,
    "The backup in {path} is of {found}, not of {party}.",
    "{path}のバックアップは{found}のもので、{party}のものではありません。",
)
PARTY_RUNNING = _kind(
    "PartyRunning",
    409,
    "The database of {party} is in use (is the party running?): stop it before restoring.",
    "{party}のデータベースは使用中です(稼働中ではありませんか)。停止してから復元してください。",
)
RESTORE_FAILED = _kind(
    "RestoreFailed",
    500,
    "The restore of {party} failed: {detail}",
    "{party}の復元に失敗しました: {detail}",
)
RESTORE_VERIFICATION_FAILED = _kind(
    "RestoreVerificationFailed",
    422,
    "The restored copy of {party} does not verify: {detail}. The database was left as it was.",
    "{party}の復元したコピーの検証に失敗しました: {detail}。データベースは変更していません。",
)

# マイナポータル: sign-in, self-information (自己情報提供), disclosure of records, notices
PORTAL_SIGN_IN_FAILED = _kind(
    "PortalSignInFailed",
    401,
    "Sign-in failed: the portal holds no card of a person with this individual number (the"
    " sign-in is emulated: only the portal's demo residents can sign in).",
    "ログインできませんでした。当該個人番号の方のカードはこのマイナポータルに登録されていません"
    "(ログインは模擬です。デモ住民のみログインできます)。",
)
NOT_THE_PORTAL = _kind(
    "NotThePortal",
    403,
    "Only マイナポータル may ask this for a person; {caller} is not マイナポータル.",
    "この求めは本人に代わってマイナポータルのみが行えます({caller}はマイナポータルではありません)。",
)

ATTACHMENT_INVALID = _kind(
    "AttachmentInvalid",
    400,
    "The attachment cannot be taken: {detail}",
    "添付ファイルを受け付けられません: {detail}",
)
UNKNOWN_ATTACHMENT = _kind(
    "UnknownAttachment",
    404,
    "No attachment {attachment_id} exists.",
    "添付ファイル{attachment_id}は存在しません。",
)
UNKNOWN_SELF_INFORMATION = _kind(
    "UnknownSelfInformation",
    404,
    "No request for one's own information {request_id} exists.",
    "自己情報の求め{request_id}は存在しません。",
)

NO_PORTAL_ACCOUNT = _kind(
    "NoPortalAccount",
    404,
    "The person has no マイナポータル account: the notice cannot be delivered.",
    "対象者はマイナポータルを利用していないため、お知らせを配信できません。",
)
UNKNOWN_NOTICE = _kind(
    "UnknownNotice",
    404,
    "Notice {notice} is unknown.",
    "お知らせ{notice}は存在しません。",
)
NOTICE_INVALID = _kind(
    "NoticeInvalid",
    400,
    "The notice cannot be sent: {detail}",
    "お知らせを送信できません: {detail}",
)

# The renkei command (renkei/cli.py, renkei/failures.py): failures of the command itself
USAGE_INVALID = _kind(
    "UsageInvalid",
    400,
    "The command line is not valid: {detail}",
    "コマンドラインが正しくありません: {detail}",
)
CONFIGURATION_INVALID = _kind(
    "ConfigurationInvalid",
    400,
    "The configuration cannot be used: {detail}",
    "設定ファイルを使用できません: {detail}",
)
FILE_UNUSABLE = _kind(
    "FileUnusable",
    400,
    "{path} cannot be used: {detail}",
    "{path}を使用できません: {detail}",
)
RESULT_FILE_EXISTS = _kind(
    "ResultFileExists",
    409,
    "The result file {path} exists already.",
    "結果ファイル{path}は既に存在します。",
)
DATABASE_UNAVAILABLE = _kind(
    "DatabaseUnavailable",
    503,
    "The database {database} cannot be used: {detail}",
    "データベース{database}を使用できません: {detail}",
)
WAIT_TIMED_OUT = _kind(
    "WaitTimedOut",
    504,
    "Gave up waiting: {detail}",
    "待機を打ち切りました: {detail}",
)
